//! Port of waitress/compat.py.
//!
//! waitress keeps its platform facts in one file; so does the port. Every `extern "C"`
//! declaration, platform constant and `unsafe` call of the crate lives here, each behind a
//! small safe function, so the rest of the crate is safe Rust over `std` types.

// ---- buffers ----

/// What `buffers::anonymous_tempfile` needs to create a temporary file that never has a name:
/// `open(dir, O_TMPFILE | O_RDWR, 0600)` (Linux 3.11). `O_TMPFILE` is `None` on the
/// architectures whose value is not listed here; the caller then falls back to a random name,
/// removed at once.
#[cfg(target_os = "linux")]
pub mod tmpfile {
    /// `__O_TMPFILE | O_DIRECTORY` from `<asm-generic/fcntl.h>` (`O_DIRECTORY` is `0o200000`).
    #[cfg(any(target_arch = "x86", target_arch = "x86_64", target_arch = "riscv64"))]
    pub const O_TMPFILE: Option<i32> = Some(0o20000000 | 0o200000);
    /// `__O_TMPFILE | O_DIRECTORY`: arm's and arm64's `<asm/fcntl.h>` make `O_DIRECTORY`
    /// `0o40000`.
    #[cfg(any(target_arch = "arm", target_arch = "aarch64"))]
    pub const O_TMPFILE: Option<i32> = Some(0o20000000 | 0o40000);
    /// Not known for this architecture.
    #[cfg(not(any(
        target_arch = "x86",
        target_arch = "x86_64",
        target_arch = "riscv64",
        target_arch = "arm",
        target_arch = "aarch64"
    )))]
    pub const O_TMPFILE: Option<i32> = None;
    /// How a kernel or file system without `O_TMPFILE` refuses it (`<asm-generic/errno-base.h>`,
    /// `<asm-generic/errno.h>`, the values of every architecture above): an old kernel opens
    /// the directory itself (`EISDIR`) or rejects the flags (`EINVAL`); a file system without
    /// support answers `EOPNOTSUPP`.
    pub const O_TMPFILE_UNSUPPORTED: [i32; 3] = [EISDIR, EINVAL, EOPNOTSUPP];
    const EISDIR: i32 = 21;
    const EINVAL: i32 = 22;
    const EOPNOTSUPP: i32 = 95;
}
