//! Unit tests of the simulated disk.

use super::*;

fn write(s: &SimStorage, path: &str, data: &[u8]) -> Box<dyn StorageFile> {
    let f = s
        .open(Path::new(path), OpenMode::OpenOrCreate)
        .expect("open");
    f.write_all_at(data, 0).expect("write");
    f
}

#[test]
fn unsynced_data_and_names_are_lost_by_a_power_cut() {
    let s = SimStorage::new();
    s.create_dir_all(Path::new("/d")).expect("mkdir");
    s.sync_dir(Path::new("/")).expect("sync root");
    let f = write(&s, "/d/a", b"hello");
    f.sync_data().expect("sync");
    // The file's data is durable, its name is not.
    s.crash(CrashMode::KeepNone, 1);
    assert!(!s.exists(Path::new("/d/a")));
    let f = write(&s, "/d/a", b"hello");
    f.sync_data().expect("sync");
    s.sync_dir(Path::new("/d")).expect("sync dir");
    f.write_all_at(b"J", 0).expect("write");
    s.crash(CrashMode::KeepNone, 2);
    assert_eq!(s.read(Path::new("/d/a")).expect("read"), b"hello");
    // A handle from before the cut is dead.
    assert_eq!(f.len().map_err(|e| e.raw_os_error()), Err(Some(EIO)));
}

#[test]
fn keep_all_keeps_everything_and_a_failed_fsync_loses_the_dirty_pages() {
    let s = SimStorage::new();
    let f = write(&s, "/a", b"one");
    s.sync_dir(Path::new("/")).expect("sync root");
    s.crash(CrashMode::KeepAll, 3);
    assert_eq!(s.read(Path::new("/a")).expect("read"), b"one");
    let f2 = s.open(Path::new("/a"), OpenMode::Existing).expect("open");
    drop(f);
    f2.write_all_at(b"two", 0).expect("write");
    s.inject(Fault::eio(FaultOp::Sync, "/a"));
    assert!(f2.sync_data().is_err());
    assert_eq!(s.read(Path::new("/a")).expect("read"), b"two");
    f2.sync_data().expect("second sync succeeds");
    s.crash(CrashMode::KeepAll, 4);
    assert_eq!(s.read(Path::new("/a")).expect("read"), b"one");
}

#[test]
fn random_pages_keep_some_pages_and_renames_are_atomic() {
    let s = SimStorage::new();
    let big = vec![7u8; (PAGE * 8) as usize];
    let f = write(&s, "/big", &big);
    drop(f);
    s.sync_dir(Path::new("/")).expect("sync");
    let mut kept = HashSet::new();
    for seed in 0..8 {
        let s2 = SimStorage::new();
        let f = write(&s2, "/big", &big);
        s2.sync_dir(Path::new("/")).expect("sync");
        drop(f);
        s2.crash(CrashMode::RandomPages, seed);
        let got = s2.read(Path::new("/big")).expect("read");
        kept.insert(got.iter().filter(|&&b| b == 7).count() as u64 / PAGE);
    }
    assert!(kept.len() > 2, "random subsets differ by seed: {kept:?}");
    write(&s, "/tmp", b"new");
    s.rename(Path::new("/tmp"), Path::new("/big"))
        .expect("rename");
    s.crash(CrashMode::RandomPages, 9);
    let names = s.list_dir(Path::new("/")).expect("list");
    assert!(
        names == vec!["big".to_string()] || names == vec!["big".to_string(), "tmp".to_string()],
        "{names:?}"
    );
}

#[test]
fn capacity_and_planned_crash() {
    let s = SimStorage::new();
    s.set_capacity(Some(10));
    let f = write(&s, "/a", b"12345");
    let e = f.write_all_at(b"123456", 5).expect_err("full");
    assert_eq!(e.raw_os_error(), Some(ENOSPC));
    let at = s.ops() + 2;
    s.crash_at_op(at, CrashMode::KeepNone, 0);
    f.write_all_at(b"x", 0).expect("before the cut");
    assert!(f.write_all_at(b"y", 0).is_err(), "the cut happened");
    assert_eq!(s.crashes(), 1);
}
