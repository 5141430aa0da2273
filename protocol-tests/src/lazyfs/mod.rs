//! LazyFs: a file system that forgets what was never synced, to stand for a power cut.
//!
//! In the spirit of LazyFS (the FUSE file system Jepsen uses): a FUSE pass-through over a
//! real *backing* directory, which holds only what would survive a power cut. Everything
//! else (written bytes, new sizes, new/renamed/removed names) is kept in memory and shown to
//! programs laid over the backing directory, until a sync makes it durable.
//! [`LazyFs::cut_power`] unmounts (the programs using it must be dead already), drops what is
//! pending (all of it, or a random part with a torn write), and mounts again on what survived.
//!
//! The Linux rules it models, strictly (POSIX, XFS, btrfs; ext4 with `data=ordered` is often
//! kinder and is *not* what is modelled):
//! - `write`/`pwrite`/`ftruncate`/`fallocate` change memory only; `close` syncs nothing.
//! - `fsync` and `fdatasync` of a file make its bytes and its size durable, but not its
//!   directory entry: a file created (or renamed) since its directory was last fsynced is
//!   gone after a cut even though its bytes were synced.
//! - Writes through a descriptor opened with `O_SYNC` or `O_DSYNC` are durable when the write
//!   returns (as if each were followed by `fdatasync`).
//! - `fsync` of a directory makes its entries durable: names created, renamed in or out,
//!   removed. A directory moved in brings what was durable inside it. A rename between two
//!   directories is durable at each end when that end's directory is synced (a file may then
//!   be found under both names, or, if only the old directory was synced, under neither).
//! - `sync_file_range` makes nothing durable: it only starts writeback and never reaches a
//!   FUSE file system, so it cannot do more here either.
//! - `syncfs`/`sync`: Linux does not pass them to a FUSE file system (`FUSE_SYNCFS` is sent
//!   to virtiofs only), so on this mount, as on every `/dev/fuse` file system, they make
//!   nothing durable. [`LazyFs::syncfs`] does what a disk file system's `syncfs` does
//!   (everything pending becomes durable), for tests that model one.
//! - Not modelled: permissions, times and other metadata (live only), symlinks, hard links,
//!   special files, extended attributes, `RENAME_EXCHANGE`, hole punching; mmap is unusable
//!   (files are opened `FOPEN_DIRECT_IO`).
//!
//! A partial cut ([`Cut::Random`]) lets each pending write or truncation reach the disk or
//! not, in order, a surviving write maybe torn (only a prefix of it), and each directory's
//! pending entries survive all together or not at all.

mod fuse;
mod state;
#[cfg(test)]
mod tests;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use fuser::{BackgroundSession, Config, MountOption};

use self::fuse::Fuse;
use self::state::State;

/// What a power cut drops.
#[derive(Debug, Clone, Copy)]
pub enum Cut {
    /// Everything no sync covered.
    Everything,
    /// A random part of it (see the module documentation), from this seed.
    Random {
        /// Seed of the xorshift generator that decides.
        seed: u64,
    },
}

/// A mounted LazyFs. Dropping it unmounts it.
pub struct LazyFs {
    backing: PathBuf,
    store: PathBuf,
    mountpoint: PathBuf,
    state: Arc<Mutex<State>>,
    session: Option<BackgroundSession>,
}

impl std::fmt::Debug for LazyFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyFs")
            .field("backing", &self.backing)
            .field("mountpoint", &self.mountpoint)
            .finish_non_exhaustive()
    }
}

/// Why LazyFs cannot be mounted on this machine, if it cannot: it needs `/dev/fuse` and
/// `fusermount3` (Debian: `apt-get install fuse3`).
pub fn unavailable() -> Option<String> {
    if !Path::new("/dev/fuse").exists() {
        return Some("no /dev/fuse (LazyFs needs the fuse kernel module)".into());
    }
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join("fusermount3").is_file()))
        .unwrap_or(false);
    if !found {
        return Some("no fusermount3 on PATH (apt-get install fuse3)".into());
    }
    None
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

fn io_err(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

impl LazyFs {
    /// Mounts a LazyFs at `base/mnt` over the durable directory `base/durable` (both created
    /// if missing; what `base/durable` holds is what the file system starts with).
    /// `base/store` is its scratch space on the same file system.
    pub fn mount(base: &Path) -> io::Result<LazyFs> {
        let backing = base.join("durable");
        let store = base.join("store");
        let mountpoint = base.join("mnt");
        for dir in [&backing, &mountpoint] {
            fs::create_dir_all(dir)?;
        }
        let state = Arc::new(Mutex::new(fresh_state(&backing, &store)?));
        let mut lazy = LazyFs {
            backing,
            store,
            mountpoint,
            state,
            session: None,
        };
        lazy.start()?;
        Ok(lazy)
    }

    fn start(&mut self) -> io::Result<()> {
        let fs = Fuse {
            state: Arc::clone(&self.state),
            backing: self.backing.clone(),
        };
        let mut config = Config::default();
        config.mount_options = vec![MountOption::FSName("lazyfs".into()), MountOption::RW];
        self.session = Some(fuser::spawn_mount(fs, &self.mountpoint, &config)?);
        Ok(())
    }

    /// Where programs use the file system.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// The backing directory: what would survive a power cut right now.
    pub fn durable(&self) -> &Path {
        &self.backing
    }

    /// What a disk file system's syncfs(2) does: every pending byte and entry made durable.
    pub fn syncfs(&self) -> io::Result<()> {
        lock(&self.state).sync_everything().map_err(io_err)
    }

    /// (files with unsynced bytes, directories with unsynced entries).
    pub fn pending(&self) -> (usize, usize) {
        lock(&self.state).pending_counts()
    }

    /// Cuts the power: unmounts (fails if a program still has a file open here: kill it
    /// first), drops what `cut` says, and mounts again on what survived.
    pub fn cut_power(&mut self, cut: Cut) -> io::Result<()> {
        if let Some(session) = self.session.take() {
            session.umount_and_join()?;
        }
        if let Cut::Random { seed } = cut {
            let mut x = seed | 1;
            let mut coin = |n: u64| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if n == 0 {
                    0
                } else {
                    x % n
                }
            };
            lock(&self.state)
                .write_back_some(&mut coin)
                .map_err(io_err)?;
        }
        *lock(&self.state) = fresh_state(&self.backing, &self.store)?;
        self.start()
    }
}

/// A state with nothing pending over `backing`, its scratch `store` emptied (inodes whose
/// names never became durable die there, as fsck would collect them).
fn fresh_state(backing: &Path, store: &Path) -> io::Result<State> {
    match fs::remove_dir_all(store) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    fs::create_dir_all(store)?;
    State::new(backing, store)
}

impl Drop for LazyFs {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            let _ = session.umount_and_join();
        }
    }
}
