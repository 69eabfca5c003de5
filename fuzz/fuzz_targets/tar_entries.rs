//! The tar reader, the path normaliser and the entry classifier on arbitrary bytes: no
//! panic, no unbounded allocation, and every entry they accept survives a write and a
//! re-read unchanged (the header writer and the reader agree).
#![no_main]

use libfuzzer_sys::fuzz_target;
use stackcore::entry::Kind;
use stackcore::layer::index::{Change, classify};
use stackcore::tar::{END_OF_ARCHIVE, TarReader, normalize_path, padding, write_header};

fuzz_target!(|data: &[u8]| {
    let _ = normalize_path(data);
    let mut r = TarReader::new(data);
    let mut data_buf = Vec::new();
    for _ in 0..64 {
        let h = match r.next_header() {
            Ok(Some(h)) => h,
            Ok(None) | Err(_) => return,
        };
        let Ok(change) = classify(h.entry.clone()) else {
            continue;
        };
        data_buf.clear();
        if std::io::Read::read_to_end(&mut r.data(), &mut data_buf).is_err() {
            return;
        }
        let Change::Put(e, _) = change else {
            continue;
        };
        // Round trip: what we accepted, written by our writer, reads back the same.
        let mut out = Vec::new();
        write_header(&mut out, &e);
        if e.kind == Kind::File {
            out.extend_from_slice(&data_buf);
            out.resize(out.len() + padding(data_buf.len() as u64), 0);
        }
        out.extend_from_slice(&END_OF_ARCHIVE);
        let mut again = TarReader::new(&out[..]);
        let back = again
            .next_header()
            .expect("our own header reads back")
            .expect("an entry");
        let back = classify(back.entry).expect("our own entry classifies");
        assert_eq!(back, Change::Put(e, None), "write/read round trip");
    }
});
