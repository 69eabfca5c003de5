//! kiwimerge's XML reader (and stash's description reader) on arbitrary bytes: no panic,
//! no blow-up, and a description it accepts serialises to a document that reads back and
//! serialises the same (the canonical form is a fixed point).
#![no_main]

use libfuzzer_sys::fuzz_target;
use stackcore::kiwi::{load_description, xml};

fuzz_target!(|data: &[u8]| {
    let _ = stackcore::description::facts(data, "fuzz");
    let Ok(d) = load_description(data, "fuzz", None) else {
        return;
    };
    let once = xml::serialize(&d.doc);
    let again =
        load_description(once.as_bytes(), "fuzz-again", None).expect("our own output reads back");
    assert_eq!(
        once,
        xml::serialize(&again.doc),
        "serialise is not a fixed point"
    );
});
