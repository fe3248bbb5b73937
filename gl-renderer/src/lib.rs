//! EGL + GLES renderer (DMA-BUF import, composition, readback): arrives with the DMA-BUF issue.
