//! The image JSON documents (manifest, index, config, descriptor) and `Digest::parse` on
//! arbitrary bytes: no panic, and whatever parses serialises and parses back equal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stackcore::digest::Digest;
use stackcore::oci::{Descriptor, ImageConfig, Index, Manifest};

fn round_trip<T>(data: &[u8])
where
    T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug,
{
    if let Ok(v) = serde_json::from_slice::<T>(data) {
        let bytes = serde_json::to_vec(&v).expect("serialises");
        let back: T = serde_json::from_slice(&bytes).expect("our own output parses");
        assert_eq!(v, back);
        // Deterministic: the same value always gives the same bytes (digests depend on it).
        assert_eq!(bytes, serde_json::to_vec(&back).expect("serialises"));
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data)
        && let Ok(d) = Digest::parse(s)
    {
        assert_eq!(d.as_str(), s);
        assert_eq!(d.hex().len(), 64);
    }
    round_trip::<Manifest>(data);
    round_trip::<Index>(data);
    round_trip::<ImageConfig>(data);
    round_trip::<Descriptor>(data);
});
