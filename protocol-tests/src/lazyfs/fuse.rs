//! The FUSE side of [`LazyFs`](super::LazyFs): each kernel request becomes a call on the
//! shared [`State`]. Entries and attributes are given a time-to-live of zero and files are
//! opened with `FOPEN_DIRECT_IO`, so the kernel caches nothing: every read and write of a
//! program reaches the model, and nothing the kernel remembers can outlive a cut.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use super::state::{Attr, Res, State};

const TTL: Duration = Duration::ZERO;

/// The file system the kernel talks to.
pub(crate) struct Fuse {
    pub(crate) state: Arc<Mutex<State>>,
    /// The backing directory, for statfs.
    pub(crate) backing: PathBuf,
}

fn file_attr(ino: u64, a: Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.mtime,
        mtime: a.mtime,
        ctime: a.mtime,
        crtime: a.mtime,
        kind: if a.is_dir {
            FileType::Directory
        } else {
            FileType::RegularFile
        },
        perm: a.perm,
        nlink: if a.is_dir { 2 } else { 1 },
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn err(code: i32) -> Errno {
    Errno::from_i32(code)
}

impl Fuse {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic in another request leaves the model as it was between operations.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn entry(&self, reply: ReplyEntry, found: Res<u64>) {
        let state = self.state();
        match found.and_then(|ino| Ok((ino, state.attr(ino)?))) {
            Ok((ino, attr)) => reply.entry(&TTL, &file_attr(ino, attr), Generation(0)),
            Err(code) => reply.error(err(code)),
        }
    }

    fn empty(reply: ReplyEmpty, done: Res<()>) {
        match done {
            Ok(()) => reply.ok(),
            Err(code) => reply.error(err(code)),
        }
    }
}

impl Filesystem for Fuse {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let found = self.state().lookup(parent.0, name);
        self.entry(reply, found);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.state().attr(ino.0) {
            Ok(attr) => reply.attr(&TTL, &file_attr(ino.0, attr)),
            Err(code) => reply.error(err(code)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut state = self.state();
        let done = size
            .map_or(Ok(()), |len| state.truncate(ino.0, len))
            .and_then(|()| {
                if let Some(mode) = mode {
                    state.set_perm(ino.0, (mode & 0o7777) as u16)?;
                }
                state.attr(ino.0)
            });
        match done {
            Ok(attr) => reply.attr(&TTL, &file_attr(ino.0, attr)),
            Err(code) => reply.error(err(code)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(Errno::EPERM);
        }
        let perm = (mode & !umask & 0o7777) as u16;
        let made = self
            .state()
            .create(parent.0, name, false, perm, req.uid(), req.gid());
        self.entry(reply, made);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let perm = (mode & !umask & 0o7777) as u16;
        let made = self
            .state()
            .create(parent.0, name, true, perm, req.uid(), req.gid());
        self.entry(reply, made);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        Self::empty(reply, self.state().remove(parent.0, name, false));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        Self::empty(reply, self.state().remove(parent.0, name, true));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let bits = flags.bits();
        if bits & !libc::RENAME_NOREPLACE != 0 {
            // RENAME_EXCHANGE and RENAME_WHITEOUT are not modelled.
            return reply.error(Errno::EINVAL);
        }
        let noreplace = bits & libc::RENAME_NOREPLACE != 0;
        let done = self
            .state()
            .rename(parent.0, name, newparent.0, newname, noreplace);
        Self::empty(reply, done);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut state = self.state();
        let mut done = state.attr(ino.0).map(|_| ());
        if done.is_ok() && flags.0 & libc::O_TRUNC != 0 {
            done = state.truncate(ino.0, 0);
        }
        match done {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO),
            Err(code) => reply.error(err(code)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let perm = (mode & !umask & 0o7777) as u16;
        let mut state = self.state();
        let made = state.create(parent.0, name, false, perm, req.uid(), req.gid());
        match made.and_then(|ino| Ok((ino, state.attr(ino)?))) {
            Ok((ino, attr)) => reply.created(
                &TTL,
                &file_attr(ino, attr),
                Generation(0),
                FileHandle(0),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(code) => reply.error(err(code)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.state().read(ino.0, offset, size) {
            Ok(bytes) => reply.data(&bytes),
            Err(code) => reply.error(err(code)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut state = self.state();
        let mut done = state.write(ino.0, offset, data);
        // O_DSYNC (and O_SYNC, which includes it): each write as if followed by fdatasync.
        if done.is_ok() && flags.0 & libc::O_DSYNC != 0 {
            done = state.sync_file(ino.0, None);
        }
        match done {
            Ok(()) => reply.written(data.len() as u32),
            Err(code) => reply.error(err(code)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) makes nothing durable.
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        Self::empty(reply, self.state().sync_file(ino.0, None));
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let entries = match self.state().entries(ino.0) {
            Ok(entries) => entries,
            Err(code) => return reply.error(err(code)),
        };
        let dots = [(".".into(), ino.0, true), ("..".into(), ino.0, true)];
        let all = dots.into_iter().chain(entries);
        for (i, (name, child, is_dir)) in all.enumerate().skip(offset as usize) {
            let kind = if is_dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            };
            if reply.add(INodeNo(child), i as u64 + 1, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        Self::empty(reply, self.state().sync_dir(ino.0));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match rustix::fs::statvfs(&self.backing) {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(err(e.raw_os_error())),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if mode != 0 {
            // Punching holes and keeping the size are not modelled.
            return reply.error(Errno::EOPNOTSUPP);
        }
        let mut state = self.state();
        let grown = state.attr(ino.0).and_then(|attr| {
            let end = offset.saturating_add(length);
            if end > attr.size {
                state.truncate(ino.0, end)
            } else {
                Ok(())
            }
        });
        Self::empty(reply, grown);
    }
}
