//! Outputs: where frames go. Headless capture now; KMS with its own issue.

pub mod display;
pub mod gl_capture;
pub mod headless;
pub mod kms;
