//! The process's memory policy.
//!
//! Kernels built with transparent huge pages "always" (Debian's among
//! them) let khugepaged collapse any 2 MiB range of anonymous memory that
//! has a single page in use into one resident huge page. The sink's heap
//! is made of small allocations spread over glibc's 64 MiB arenas, so its
//! resident size crept up by 2 MiB steps with nothing allocated: over 20
//! QEMU restarts under `display` in the lab, one arena went from 22 MiB to
//! 47 MiB resident, all of it huge pages. The pictures themselves live in
//! DMA-BUFs, shared memory and GPU buffers, which this does not touch.

use tracing::debug;

/// Opts the whole process (and what it starts) out of transparent huge
/// pages, so that its resident size follows what it uses. Fails only on
/// kernels without the call (before 3.15): then nothing changes.
pub fn opt_out_of_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes one integer argument and the rest
    // zero; it touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc != 0 {
        debug!(
            "transparent huge pages stay as the kernel has them: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Whether transparent huge pages are off for this process.
pub fn huge_pages_disabled() -> bool {
    // SAFETY: PR_GET_THP_DISABLE takes no argument; it returns the flag.
    unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) == 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opting_out_turns_huge_pages_off_for_the_process() {
        opt_out_of_huge_pages();
        assert!(huge_pages_disabled());
    }
}
