//! [`RedbBackend`]: the metadata database's file, opened through
//! [`Storage`](super::Storage), so redb's writes and fsyncs are subject to the same seam
//! (and the same simulated power cuts) as the segment files.

use std::io;

use super::StorageFile;

/// A redb storage backend over a [`StorageFile`].
#[derive(Debug)]
pub struct RedbBackend(pub Box<dyn StorageFile>);

impl redb::StorageBackend for RedbBackend {
    fn len(&self) -> Result<u64, io::Error> {
        self.0.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.0.read_exact_at(out, offset)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.0.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.0.write_all_at(data, offset)
    }
}
