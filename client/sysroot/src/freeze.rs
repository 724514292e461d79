//! Writing the boot loader's view home: a freeze/thaw cycle
//! (`FIFREEZE`, `FITHAW`) of the filesystem holding `/boot`, as ostree and
//! bootc do after a deployment change. A journaling filesystem keeps a
//! fresh change in its journal until a checkpoint; the kernel replays it
//! after a power cut, but a boot loader that reads the filesystem itself
//! (GRUB on ext4 or XFS) does not, and would start the old default after
//! a crash that Linux recovers from. Freezing checkpoints the journal.
//!
//! The one module of the crate with `unsafe`: two argument-less ioctls on
//! a directory descriptor this module opens and owns.
#![allow(unsafe_code)]

use std::fs::File;
use std::path::Path;

use rustix::io::Errno;
use rustix::ioctl::{self, opcode, NoArg};

/// `_IOWR('X', 119, int)`; the kernel ignores the argument.
const FIFREEZE: ioctl::Opcode = opcode::read_write::<rustix::ffi::c_int>(b'X', 119);
/// `_IOWR('X', 120, int)`.
const FITHAW: ioctl::Opcode = opcode::read_write::<rustix::ffi::c_int>(b'X', 120);

/// Freezes and at once thaws the filesystem holding `dir`. A filesystem
/// that cannot freeze (tmpfs, or one already frozen by someone else) needs
/// no cycle: `Ok(false)`.
pub(crate) fn freeze_thaw(dir: &Path) -> std::io::Result<bool> {
    let f = File::open(dir)?;
    // SAFETY: FIFREEZE and FITHAW take no argument the kernel reads or
    // writes; `f` is a valid open descriptor for both calls.
    let frozen = unsafe { ioctl::ioctl(&f, NoArg::<FIFREEZE>::new()) };
    match frozen {
        Ok(()) => {}
        Err(Errno::OPNOTSUPP | Errno::INVAL | Errno::BUSY | Errno::PERM) => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    // SAFETY: as above.
    unsafe { ioctl::ioctl(&f, NoArg::<FITHAW>::new()) }?;
    Ok(true)
}
