//! LazyFs really mounted: what survives a cut is exactly what was synced.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use super::{unavailable, Cut, LazyFs};

/// A LazyFs in a fresh temporary directory, or None (after saying why) on a machine that
/// cannot mount one; under CI that is a failure.
fn mounted() -> Option<(tempfile::TempDir, LazyFs)> {
    if let Some(reason) = unavailable() {
        crate::skip_unless_ci(&reason);
        return None;
    }
    let base = tempfile::tempdir().expect("temp dir");
    let lazy = LazyFs::mount(base.path()).expect("mounting LazyFs");
    Some((base, lazy))
}

fn sync_dir(dir: &Path) {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .expect("fsync of a directory");
}

/// Creates `path` holding `bytes`, its bytes and its entry durable.
fn durable_file(path: &Path, bytes: &[u8]) {
    let mut file = File::create(path).expect("create");
    file.write_all(bytes).expect("write");
    file.sync_all().expect("fsync");
    sync_dir(path.parent().expect("parent"));
}

fn read(path: &Path) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path).ok()?.read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

#[test]
fn unsynced_writes_are_gone_after_a_cut() {
    let Some((_base, mut lazy)) = mounted() else {
        return;
    };
    let kept = lazy.path().join("kept");
    durable_file(&kept, b"durable ");
    let mut file = OpenOptions::new().append(true).open(&kept).expect("open");
    file.write_all(b"and then some").expect("write");
    drop(file);
    let never = lazy.path().join("never-synced");
    fs::write(&never, b"lost").expect("write");
    // Before the cut, programs see everything they wrote.
    assert_eq!(read(&kept).as_deref(), Some(&b"durable and then some"[..]));
    assert_eq!(read(&never).as_deref(), Some(&b"lost"[..]));
    assert_eq!(lazy.pending(), (2, 1));

    lazy.cut_power(Cut::Everything).expect("cut");
    assert_eq!(read(&kept).as_deref(), Some(&b"durable "[..]));
    assert_eq!(read(&never), None, "a file never synced is gone");
    assert_eq!(lazy.pending(), (0, 0));
}

#[test]
fn fsync_keeps_the_bytes_but_not_a_new_entry() {
    let Some((_base, mut lazy)) = mounted() else {
        return;
    };
    let dir = lazy.path().join("shard");
    fs::create_dir(&dir).expect("mkdir");
    sync_dir(lazy.path());
    let linked = dir.join("linked");
    let mut file = File::create(&linked).expect("create");
    file.write_all(b"synced bytes and entry").expect("write");
    file.sync_all().expect("fsync");
    drop(file);
    // The directory is synced before `late` exists: its entry is not covered.
    sync_dir(&dir);
    let late = dir.join("late");
    File::create(&late)
        .and_then(|mut f| f.write_all(b"x").and_then(|()| f.sync_all()))
        .expect("late file");

    lazy.cut_power(Cut::Everything).expect("cut");
    assert_eq!(
        read(&linked).as_deref(),
        Some(&b"synced bytes and entry"[..])
    );
    assert_eq!(read(&late), None, "its directory was not synced after it");
    assert!(dir.is_dir(), "the synced directory's entry survives");
}

#[test]
fn a_new_files_entry_vanishes_unless_its_directory_is_synced() {
    let Some((_base, mut lazy)) = mounted() else {
        return;
    };
    let path = lazy.path().join("fresh");
    let mut file = File::create(&path).expect("create");
    file.write_all(b"bytes").expect("write");
    file.sync_all().expect("fsync");
    drop(file);
    lazy.cut_power(Cut::Everything).expect("cut");
    assert_eq!(
        read(&path),
        None,
        "fsync of a file does not make its entry durable"
    );

    durable_file(&path, b"bytes");
    lazy.cut_power(Cut::Everything).expect("cut");
    assert_eq!(read(&path).as_deref(), Some(&b"bytes"[..]));
}

#[test]
fn a_rename_without_a_directory_fsync_reverts() {
    let Some((_base, mut lazy)) = mounted() else {
        return;
    };
    let old = lazy.path().join("old");
    let new = lazy.path().join("new");
    durable_file(&old, b"content");
    fs::rename(&old, &new).expect("rename");
    assert_eq!(read(&old), None);
    lazy.cut_power(Cut::Everything).expect("cut");
    assert_eq!(
        read(&old).as_deref(),
        Some(&b"content"[..]),
        "back under its old name"
    );
    assert_eq!(read(&new), None);

    fs::rename(&old, &new).expect("rename");
    sync_dir(lazy.path());
    lazy.cut_power(Cut::Everything).expect("cut");
    assert_eq!(read(&old), None);
    assert_eq!(read(&new).as_deref(), Some(&b"content"[..]));
    // An unlink is an entry change like any other.
    fs::remove_file(&new).expect("unlink");
    lazy.cut_power(Cut::Everything).expect("cut");
    assert_eq!(
        read(&new).as_deref(),
        Some(&b"content"[..]),
        "the unlink was never synced"
    );
}

#[test]
fn o_dsync_writes_are_durable_when_they_return() {
    let Some((_base, mut lazy)) = mounted() else {
        return;
    };
    let path = lazy.path().join("log");
    durable_file(&path, b"");
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DSYNC)
        .open(&path)
        .expect("open O_DSYNC");
    file.write_all_at(b"each write durable", 0).expect("write");
    drop(file);
    lazy.cut_power(Cut::Everything).expect("cut");
    assert_eq!(read(&path).as_deref(), Some(&b"each write durable"[..]));
}

#[test]
fn truncations_are_pending_too() {
    let Some((_base, mut lazy)) = mounted() else {
        return;
    };
    let path = lazy.path().join("sized");
    durable_file(&path, b"0123456789");
    let file = OpenOptions::new().write(true).open(&path).expect("open");
    file.set_len(4).expect("truncate");
    file.write_all_at(b"ab", 6).expect("write past the end");
    drop(file);
    assert_eq!(
        read(&path).as_deref(),
        Some(&b"0123\0\0ab"[..]),
        "live view"
    );
    lazy.cut_power(Cut::Everything).expect("cut");
    assert_eq!(read(&path).as_deref(), Some(&b"0123456789"[..]));
}

#[test]
fn syncfs_of_the_model_keeps_everything_but_syncfs_2_reaches_no_fuse_file_system() {
    let Some((_base, mut lazy)) = mounted() else {
        return;
    };
    let dir = lazy.path().join("a").join("b");
    fs::create_dir_all(&dir).expect("mkdir -p");
    fs::write(dir.join("f"), b"nested").expect("write");
    fs::write(lazy.path().join("g"), b"top").expect("write");
    // syncfs(2) on the mount: the kernel does not pass it to a FUSE daemon.
    let root = File::open(lazy.path()).expect("open mount");
    rustix::fs::syncfs(&root).expect("syncfs");
    drop(root);
    lazy.cut_power(Cut::Everything).expect("cut");
    assert_eq!(
        read(&lazy.path().join("g")),
        None,
        "syncfs(2) made nothing durable"
    );

    fs::create_dir_all(&dir).expect("mkdir -p");
    fs::write(dir.join("f"), b"nested").expect("write");
    fs::write(lazy.path().join("g"), b"top").expect("write");
    lazy.syncfs().expect("model syncfs");
    assert_eq!(lazy.pending(), (0, 0));
    lazy.cut_power(Cut::Everything).expect("cut");
    assert_eq!(read(&dir.join("f")).as_deref(), Some(&b"nested"[..]));
    assert_eq!(read(&lazy.path().join("g")).as_deref(), Some(&b"top"[..]));
}

#[test]
fn a_random_cut_keeps_old_or_new_bytes_never_others() {
    let Some((_base, mut lazy)) = mounted() else {
        return;
    };
    let path = lazy.path().join("patched");
    let old = vec![b'o'; 4096];
    let mut full = old.clone();
    for i in 0..16u64 {
        let at = ((i * 7919) % 6000) as usize;
        full.resize(full.len().max(at + 300), 0);
        full[at..at + 300].fill(b'n');
    }
    // [some write lost, every write kept]
    let mut seen = [false, false];
    for seed in 1..=12u64 {
        durable_file(&path, &old);
        let file = OpenOptions::new().write(true).open(&path).expect("open");
        // Scattered writes (not one append run), some past the old end.
        for i in 0..16u64 {
            file.write_all_at(&[b'n'; 300], (i * 7919) % 6000)
                .expect("write");
        }
        drop(file);
        lazy.cut_power(Cut::Random { seed }).expect("cut");
        let got = read(&path).expect("the durable file is still there");
        assert!(
            got.len() >= old.len() && got.len() <= 6299,
            "length {}",
            got.len()
        );
        for (i, byte) in got.iter().enumerate() {
            let allowed: &[u8] = if i < old.len() { b"on" } else { b"n\0" };
            assert!(allowed.contains(byte), "seed {seed}: byte {i} is {byte}");
        }
        seen[usize::from(got == full)] = true;
    }
    assert!(seen[0], "no random cut in 12 lost a write");
}
