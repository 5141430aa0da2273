//! The model behind [`LazyFs`](super::LazyFs): what a program sees (the *live* view) and what
//! a power cut would leave (the *durable* view, kept in the backing directory).
//!
//! Files: every regular file (inode) has a hard link `store/<ino>` beside the backing tree,
//! so its durable bytes stay reachable whatever happens to its names; writes and truncations
//! wait in memory ([`Op`]) and are replayed onto that inode by fsync. Readers see the
//! durable bytes with the pending operations laid over them, in order.
//!
//! Directories: each keeps its live listing (name → inode) and its durable listing (what the
//! backing directory holds). Creating, renaming or removing a name changes only the live
//! listing; fsync of the directory makes the backing directory match it. A directory whose
//! own entry is not durable yet lives under `store/d<ino>` and is moved into place, contents
//! and all, when its parent is synced.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The root directory's inode number (FUSE's `FUSE_ROOT_ID`).
pub(crate) const ROOT: u64 = 1;

/// A change to a file's bytes that no fsync has covered yet.
#[derive(Debug)]
pub(crate) enum Op {
    /// `pwrite(offset, bytes)`.
    Write(u64, Vec<u8>),
    /// `ftruncate(len)` (or an extending `fallocate`).
    Truncate(u64),
}

/// Where a directory's durable copy lives in the backing store.
#[derive(Debug, Clone, PartialEq)]
enum Loc {
    /// The backing root itself.
    Root,
    /// Not reachable from the root: `store/d<ino>`, dropped at a cut.
    Orphan,
    /// `path(parent)/name`, a durable entry of `parent`.
    At(u64, OsString),
}

#[derive(Debug, Default)]
struct Listing {
    live: BTreeMap<OsString, u64>,
    durable: BTreeMap<OsString, u64>,
}

#[derive(Debug)]
enum Kind {
    File {
        pending: Vec<Op>,
        /// The live size (durable size with the pending operations applied).
        size: u64,
        handle: Option<File>,
    },
    Dir {
        loc: Loc,
        /// Read from the backing directory on first use.
        listing: Option<Listing>,
    },
}

/// One inode.
#[derive(Debug)]
pub(crate) struct Node {
    kind: Kind,
    /// Permission bits.
    pub(crate) perm: u16,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) mtime: SystemTime,
}

/// What [`State::attr`] reports about an inode.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attr {
    pub(crate) is_dir: bool,
    pub(crate) size: u64,
    pub(crate) perm: u16,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) mtime: SystemTime,
}

/// A failed operation's errno.
pub(crate) type Res<T> = Result<T, i32>;

fn errno(e: io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// The whole file system: live view, pending changes, and the way to the durable view.
#[derive(Debug)]
pub(crate) struct State {
    backing: PathBuf,
    store: PathBuf,
    nodes: HashMap<u64, Node>,
    next: u64,
}

impl State {
    /// A state whose durable view is `backing`; `store` (same file system, empty) holds the
    /// inode links and the not-yet-linked directories.
    pub(crate) fn new(backing: &Path, store: &Path) -> io::Result<State> {
        let meta = fs::metadata(backing)?;
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT,
            Node {
                kind: Kind::Dir {
                    loc: Loc::Root,
                    listing: None,
                },
                perm: (meta.mode() & 0o7777) as u16,
                uid: meta.uid(),
                gid: meta.gid(),
                mtime: meta.modified()?,
            },
        );
        Ok(State {
            backing: backing.to_path_buf(),
            store: store.to_path_buf(),
            nodes,
            next: ROOT + 1,
        })
    }

    fn node(&self, ino: u64) -> Res<&Node> {
        self.nodes.get(&ino).ok_or(libc::ENOENT)
    }

    fn node_mut(&mut self, ino: u64) -> Res<&mut Node> {
        self.nodes.get_mut(&ino).ok_or(libc::ENOENT)
    }

    fn is_dir(&self, ino: u64) -> bool {
        matches!(
            self.nodes.get(&ino),
            Some(Node {
                kind: Kind::Dir { .. },
                ..
            })
        )
    }

    fn store_file(&self, ino: u64) -> PathBuf {
        self.store.join(ino.to_string())
    }

    fn orphan_dir(&self, ino: u64) -> PathBuf {
        self.store.join(format!("d{ino}"))
    }

    /// Where directory `ino`'s durable copy is now.
    fn dir_path(&self, ino: u64) -> PathBuf {
        match self.nodes.get(&ino).map(|n| &n.kind) {
            Some(Kind::Dir {
                loc: Loc::At(parent, name),
                ..
            }) => self.dir_path(*parent).join(name),
            Some(Kind::Dir {
                loc: Loc::Orphan, ..
            }) => self.orphan_dir(ino),
            _ => self.backing.clone(),
        }
    }

    fn alloc(&mut self, kind: Kind, perm: u16, uid: u32, gid: u32, mtime: SystemTime) -> u64 {
        let ino = self.next;
        self.next += 1;
        let node = Node {
            kind,
            perm,
            uid,
            gid,
            mtime,
        };
        self.nodes.insert(ino, node);
        ino
    }

    /// Directory `dir`'s listing, read from its backing directory the first time.
    fn listing(&mut self, dir: u64) -> Res<&mut Listing> {
        let loaded = match &self.node(dir)?.kind {
            Kind::Dir { listing, .. } => listing.is_some(),
            Kind::File { .. } => return Err(libc::ENOTDIR),
        };
        if !loaded {
            let path = self.dir_path(dir);
            let mut listing = Listing::default();
            for entry in fs::read_dir(&path).map_err(errno)? {
                let entry = entry.map_err(errno)?;
                let meta = entry.metadata().map_err(errno)?;
                let name = entry.file_name();
                let (perm, uid, gid) = ((meta.mode() & 0o7777) as u16, meta.uid(), meta.gid());
                let mtime = meta.modified().map_err(errno)?;
                let ino = if meta.is_dir() {
                    let loc = Loc::At(dir, name.clone());
                    let kind = Kind::Dir { loc, listing: None };
                    self.alloc(kind, perm, uid, gid, mtime)
                } else if meta.is_file() {
                    let kind = Kind::File {
                        pending: Vec::new(),
                        size: meta.len(),
                        handle: None,
                    };
                    let ino = self.alloc(kind, perm, uid, gid, mtime);
                    fs::hard_link(entry.path(), self.store_file(ino)).map_err(errno)?;
                    ino
                } else {
                    continue; // Symlinks and special files are not modelled.
                };
                listing.live.insert(name.clone(), ino);
                listing.durable.insert(name, ino);
            }
            if let Kind::Dir { listing: slot, .. } = &mut self.node_mut(dir)?.kind {
                *slot = Some(listing);
            }
        }
        match &mut self.node_mut(dir)?.kind {
            Kind::Dir {
                listing: Some(listing),
                ..
            } => Ok(listing),
            _ => Err(libc::EIO),
        }
    }

    /// The inode named `name` in `dir`, as a program sees it now.
    pub(crate) fn lookup(&mut self, dir: u64, name: &OsStr) -> Res<u64> {
        self.listing(dir)?
            .live
            .get(name)
            .copied()
            .ok_or(libc::ENOENT)
    }

    /// The live names of `dir`, with their inodes and whether each is a directory.
    pub(crate) fn entries(&mut self, dir: u64) -> Res<Vec<(OsString, u64, bool)>> {
        let live: Vec<(OsString, u64)> = self
            .listing(dir)?
            .live
            .iter()
            .map(|(n, i)| (n.clone(), *i))
            .collect();
        Ok(live
            .into_iter()
            .map(|(n, i)| (n, i, self.is_dir(i)))
            .collect())
    }

    /// What `stat` reports.
    pub(crate) fn attr(&self, ino: u64) -> Res<Attr> {
        let node = self.node(ino)?;
        let (is_dir, size) = match &node.kind {
            Kind::File { size, .. } => (false, *size),
            Kind::Dir { .. } => (true, 4096),
        };
        let (perm, uid, gid, mtime) = (node.perm, node.uid, node.gid, node.mtime);
        Ok(Attr {
            is_dir,
            size,
            perm,
            uid,
            gid,
            mtime,
        })
    }

    /// Creates `name` in `dir`: the inode exists at once, its entry only in the live view.
    pub(crate) fn create(
        &mut self,
        dir: u64,
        name: &OsStr,
        dir_kind: bool,
        perm: u16,
        uid: u32,
        gid: u32,
    ) -> Res<u64> {
        if self.listing(dir)?.live.contains_key(name) {
            return Err(libc::EEXIST);
        }
        let now = SystemTime::now();
        let ino = if dir_kind {
            let kind = Kind::Dir {
                loc: Loc::Orphan,
                listing: Some(Listing::default()),
            };
            let ino = self.alloc(kind, perm, uid, gid, now);
            fs::create_dir(self.orphan_dir(ino)).map_err(errno)?;
            ino
        } else {
            let kind = Kind::File {
                pending: Vec::new(),
                size: 0,
                handle: None,
            };
            let ino = self.alloc(kind, perm, uid, gid, now);
            File::create(self.store_file(ino)).map_err(errno)?;
            ino
        };
        self.listing(dir)?.live.insert(name.to_os_string(), ino);
        Ok(ino)
    }

    /// unlink(2) (`dir_kind` false) or rmdir(2) (`dir_kind` true), in the live view.
    pub(crate) fn remove(&mut self, dir: u64, name: &OsStr, dir_kind: bool) -> Res<()> {
        let ino = self.lookup(dir, name)?;
        match (dir_kind, self.is_dir(ino)) {
            (false, true) => return Err(libc::EISDIR),
            (true, false) => return Err(libc::ENOTDIR),
            (true, true) if !self.listing(ino)?.live.is_empty() => return Err(libc::ENOTEMPTY),
            _ => {}
        }
        self.listing(dir)?.live.remove(name);
        Ok(())
    }

    /// rename(2) in the live view; `noreplace` is RENAME_NOREPLACE.
    pub(crate) fn rename(
        &mut self,
        dir: u64,
        name: &OsStr,
        to: u64,
        to_name: &OsStr,
        noreplace: bool,
    ) -> Res<()> {
        let ino = self.lookup(dir, name)?;
        self.listing(to)?;
        if let Ok(existing) = self.lookup(to, to_name) {
            if existing == ino {
                return Ok(());
            }
            if noreplace {
                return Err(libc::EEXIST);
            }
            match (self.is_dir(ino), self.is_dir(existing)) {
                (true, false) => return Err(libc::ENOTDIR),
                (false, true) => return Err(libc::EISDIR),
                (true, true) if !self.listing(existing)?.live.is_empty() => {
                    return Err(libc::ENOTEMPTY)
                }
                _ => {}
            }
        }
        self.listing(dir)?.live.remove(name);
        self.listing(to)?.live.insert(to_name.to_os_string(), ino);
        Ok(())
    }

    fn file(&mut self, ino: u64) -> Res<(&mut Vec<Op>, &mut u64)> {
        match &mut self.node_mut(ino)?.kind {
            Kind::File { pending, size, .. } => Ok((pending, size)),
            Kind::Dir { .. } => Err(libc::EISDIR),
        }
    }

    /// The inode's durable bytes, opened once.
    fn handle(&mut self, ino: u64) -> Res<&File> {
        let path = self.store_file(ino);
        match &mut self.node_mut(ino)?.kind {
            Kind::File { handle, .. } => {
                if handle.is_none() {
                    let opened = OpenOptions::new()
                        .read(true)
                        .write(true)
                        .custom_flags(libc::O_NOFOLLOW)
                        .open(path);
                    *handle = Some(opened.map_err(errno)?);
                }
                handle.as_ref().ok_or(libc::EIO)
            }
            Kind::Dir { .. } => Err(libc::EISDIR),
        }
    }

    /// pread(2): the durable bytes with the pending operations laid over them in order.
    pub(crate) fn read(&mut self, ino: u64, offset: u64, len: u32) -> Res<Vec<u8>> {
        let size = *self.file(ino)?.1;
        let end = size.min(offset.saturating_add(u64::from(len)));
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; (end - offset) as usize];
        let handle = self.handle(ino)?;
        let mut done = 0;
        while done < buf.len() {
            match handle.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(errno(e)),
            }
        }
        let (pending, _) = self.file(ino)?;
        for op in pending.iter() {
            match op {
                Op::Write(at, bytes) => {
                    let from = offset.max(*at);
                    let to = end.min(at + bytes.len() as u64);
                    if from < to {
                        buf[(from - offset) as usize..(to - offset) as usize]
                            .copy_from_slice(&bytes[(from - at) as usize..(to - at) as usize]);
                    }
                }
                Op::Truncate(len) if *len < end => {
                    buf[(len.saturating_sub(offset)) as usize..].fill(0);
                }
                Op::Truncate(_) => {}
            }
        }
        Ok(buf)
    }

    /// pwrite(2): kept in memory until fsync.
    pub(crate) fn write(&mut self, ino: u64, offset: u64, data: &[u8]) -> Res<()> {
        let (pending, size) = self.file(ino)?;
        *size = (*size).max(offset + data.len() as u64);
        // An append right after the previous write grows it: long sequential writes stay one
        // operation, so reads do not walk thousands of them.
        if let Some(Op::Write(at, bytes)) = pending.last_mut() {
            if *at + bytes.len() as u64 == offset {
                bytes.extend_from_slice(data);
                return Ok(());
            }
        }
        pending.push(Op::Write(offset, data.to_vec()));
        self.node_mut(ino)?.mtime = SystemTime::now();
        Ok(())
    }

    /// ftruncate(2): kept in memory until fsync.
    pub(crate) fn truncate(&mut self, ino: u64, len: u64) -> Res<()> {
        let (pending, size) = self.file(ino)?;
        *size = len;
        pending.push(Op::Truncate(len));
        Ok(())
    }

    /// chmod(2): permissions are kept in memory only (not modelled as durable).
    pub(crate) fn set_perm(&mut self, ino: u64, perm: u16) -> Res<()> {
        self.node_mut(ino)?.perm = perm;
        Ok(())
    }

    /// fsync(2)/fdatasync(2) of a file: its bytes and size become durable (not its entry).
    /// With `keep`, only the operations it picks reach the disk, the last one maybe torn
    /// (what a power cut in the middle of writeback leaves).
    pub(crate) fn sync_file(
        &mut self,
        ino: u64,
        keep: Option<&mut dyn FnMut(usize) -> Option<usize>>,
    ) -> Res<()> {
        let ops = std::mem::take(self.file(ino)?.0);
        let handle = self.handle(ino)?;
        let mut keep = keep;
        for op in ops {
            let op = match keep.as_mut() {
                None => op,
                Some(pick) => {
                    let len = match &op {
                        Op::Write(_, bytes) => bytes.len(),
                        Op::Truncate(_) => 0,
                    };
                    match (pick(len), op) {
                        (None, _) => continue,
                        (Some(n), Op::Write(at, mut bytes)) => {
                            bytes.truncate(n);
                            Op::Write(at, bytes)
                        }
                        (Some(_), op) => op,
                    }
                }
            };
            match op {
                Op::Write(at, bytes) => handle.write_all_at(&bytes, at).map_err(errno)?,
                Op::Truncate(len) => handle.set_len(len).map_err(errno)?,
            }
        }
        if keep.is_some() {
            let durable = handle.metadata().map_err(errno)?.len();
            *self.file(ino)?.1 = durable;
        }
        Ok(())
    }

    /// fsync(2) of a directory: its backing directory gets exactly its live entries.
    pub(crate) fn sync_dir(&mut self, dir: u64) -> Res<()> {
        let listing = self.listing(dir)?;
        let (live, durable) = (listing.live.clone(), listing.durable.clone());
        let path = self.dir_path(dir);
        for (name, ino) in &durable {
            if live.get(name) != Some(ino) {
                self.unlink_durable(dir, &path, name, *ino)?;
            }
        }
        for (name, ino) in &live {
            if durable.get(name) != Some(ino) {
                self.link_durable(dir, &path, name, *ino)?;
            }
        }
        Ok(())
    }

    fn unlink_durable(&mut self, dir: u64, path: &Path, name: &OsStr, ino: u64) -> Res<()> {
        let at = Loc::At(dir, name.to_os_string());
        let orphan = self.orphan_dir(ino);
        match &mut self.node_mut(ino)?.kind {
            Kind::Dir { loc, .. } if *loc == at => {
                fs::rename(path.join(name), orphan).map_err(errno)?;
                *loc = Loc::Orphan;
            }
            Kind::Dir { .. } => {}
            Kind::File { .. } => fs::remove_file(path.join(name)).map_err(errno)?,
        }
        self.listing(dir)?.durable.remove(name);
        Ok(())
    }

    fn link_durable(&mut self, dir: u64, path: &Path, name: &OsStr, ino: u64) -> Res<()> {
        let target = path.join(name);
        if self.is_dir(ino) {
            // A directory has one durable place: moving it there takes it from the old one.
            let from = self.dir_path(ino);
            if let Kind::Dir {
                loc: Loc::At(parent, old),
                ..
            } = &self.node(ino)?.kind
            {
                let (parent, old) = (*parent, old.clone());
                self.listing(parent)?.durable.remove(&old);
            }
            fs::rename(from, &target).map_err(errno)?;
            if let Kind::Dir { loc, .. } = &mut self.node_mut(ino)?.kind {
                *loc = Loc::At(dir, name.to_os_string());
            }
        } else {
            fs::hard_link(self.store_file(ino), &target).map_err(errno)?;
        }
        self.listing(dir)?.durable.insert(name.to_os_string(), ino);
        Ok(())
    }

    /// Every inode: files with pending bytes, directories whose entries were read.
    fn inodes(&self) -> (Vec<u64>, Vec<u64>) {
        let mut files = Vec::new();
        let mut dirs = Vec::new();
        for (ino, node) in &self.nodes {
            match &node.kind {
                Kind::File { pending, .. } if !pending.is_empty() => files.push(*ino),
                Kind::Dir {
                    listing: Some(_), ..
                } => dirs.push(*ino),
                _ => {}
            }
        }
        files.sort_unstable();
        dirs.sort_unstable();
        (files, dirs)
    }

    /// What a real syncfs(2) does: every pending byte and entry becomes durable.
    pub(crate) fn sync_everything(&mut self) -> Res<()> {
        let (files, dirs) = self.inodes();
        for ino in files {
            self.sync_file(ino, None)?;
        }
        for dir in dirs {
            self.sync_dir(dir)?;
        }
        Ok(())
    }

    /// A power cut in the middle of writeback: each pending operation reaches the disk or
    /// not (`coin`), a surviving write maybe only in part; each directory's pending entries
    /// survive all together or not at all.
    pub(crate) fn write_back_some(&mut self, coin: &mut dyn FnMut(u64) -> u64) -> Res<()> {
        let (files, dirs) = self.inodes();
        for ino in files {
            let mut pick = |len: usize| -> Option<usize> {
                match coin(4) {
                    0 | 1 => None,
                    2 => Some(len),
                    // Torn: a random prefix of the write.
                    _ => Some(coin(len as u64 + 1) as usize),
                }
            };
            self.sync_file(ino, Some(&mut pick))?;
        }
        for dir in dirs {
            if coin(2) == 0 {
                self.sync_dir(dir)?;
            }
        }
        Ok(())
    }

    /// (files with pending bytes, directories with pending entries): for tests and reports.
    pub(crate) fn pending_counts(&self) -> (usize, usize) {
        let files = self.inodes().0.len();
        let dirs = self
            .nodes
            .values()
            .filter(|n| match &n.kind {
                Kind::Dir {
                    listing: Some(l), ..
                } => l.live != l.durable,
                _ => false,
            })
            .count();
        (files, dirs)
    }
}
