//! `--platform os/arch[/variant]` and picking one image out of an image index.

use std::fmt;
use std::str::FromStr;

use crate::oci::types::{Descriptor, Index, host_arch};
use crate::{Error, Result};

/// A platform to pick from an image index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformSpec {
    /// `linux`.
    pub os: String,
    /// `amd64`, `arm64`, ...
    pub architecture: String,
    /// `v8`, `v7`, ... when it matters.
    pub variant: Option<String>,
}

impl PlatformSpec {
    /// The machine we run on: `linux/<host arch>`.
    pub fn host() -> PlatformSpec {
        PlatformSpec {
            os: "linux".to_owned(),
            architecture: host_arch().to_owned(),
            variant: None,
        }
    }

    /// Picks this platform's manifest from `index`. A spec without a variant takes an entry
    /// without one first, then the first of that os/arch (`arm64` images say `v8` or nothing).
    pub fn pick<'a>(&self, index: &'a Index) -> Option<&'a Descriptor> {
        let same_arch = |d: &&Descriptor| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == self.os && p.architecture == self.architecture)
        };
        let variant = |d: &Descriptor| d.platform.as_ref().and_then(|p| p.variant.clone());
        match &self.variant {
            Some(v) => index
                .manifests
                .iter()
                .filter(same_arch)
                .find(|d| variant(d).as_deref() == Some(v.as_str())),
            None => index
                .manifests
                .iter()
                .filter(same_arch)
                .find(|d| variant(d).is_none())
                .or_else(|| index.manifests.iter().find(same_arch)),
        }
    }

    /// The platforms an index offers, for messages.
    pub fn offered(index: &Index) -> String {
        let all: Vec<String> = index
            .manifests
            .iter()
            .filter_map(|d| d.platform.as_ref())
            .map(|p| {
                let mut s = format!("{}/{}", p.os, p.architecture);
                if let Some(v) = &p.variant {
                    s.push('/');
                    s.push_str(v);
                }
                s
            })
            .collect();
        if all.is_empty() {
            "none named".to_owned()
        } else {
            all.join(", ")
        }
    }
}

impl FromStr for PlatformSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<PlatformSpec> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(|p| ok(p)) {
            return Err(Error::Usage(format!(
                "--platform {s:?}: expected OS/ARCH[/VARIANT], e.g. linux/arm64/v8"
            )));
        }
        Ok(PlatformSpec {
            os: parts[0].to_owned(),
            architecture: parts[1].to_owned(),
            variant: parts.get(2).map(|v| (*v).to_owned()),
        })
    }
}

impl fmt::Display for PlatformSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> Result<Index> {
        let entry = |n: u8, plat: &str| {
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{}","size":1,"platform":{plat}}}"#,
                format!("{n:02x}").repeat(32)
            )
        };
        let json = format!(
            r#"{{"schemaVersion":2,"manifests":[{},{},{},{},{}]}}"#,
            entry(1, r#"{"os":"linux","architecture":"amd64"}"#),
            entry(2, r#"{"os":"linux","architecture":"arm","variant":"v7"}"#),
            entry(3, r#"{"os":"linux","architecture":"arm64","variant":"v8"}"#),
            entry(4, r#"{"os":"windows","architecture":"amd64"}"#),
            entry(5, r#"{"os":"linux","architecture":"arm","variant":"v6"}"#),
        );
        serde_json::from_str(&json).map_err(|e| Error::Other(e.to_string()))
    }

    #[test]
    fn picks_os_arch_and_variant() -> Result<()> {
        let idx = index()?;
        let table: &[(&str, Option<u8>)] = &[
            ("linux/amd64", Some(1)),
            ("linux/arm64", Some(3)),
            ("linux/arm64/v8", Some(3)),
            ("linux/arm/v6", Some(5)),
            ("linux/arm", Some(2)),
            ("windows/amd64", Some(4)),
            ("linux/s390x", None),
            ("linux/arm/v5", None),
        ];
        for &(spec, want) in table {
            let got = spec
                .parse::<PlatformSpec>()?
                .pick(&idx)
                .map(|d| u8::from_str_radix(&d.digest.hex()[..2], 16).expect("hex digest"));
            assert_eq!(got, want, "{spec}");
        }
        assert_eq!(
            PlatformSpec::offered(&idx),
            "linux/amd64, linux/arm/v7, linux/arm64/v8, windows/amd64, linux/arm/v6"
        );
        Ok(())
    }

    #[test]
    fn parses_and_refuses_specs() -> Result<()> {
        let p: PlatformSpec = "linux/arm64/v8".parse()?;
        assert_eq!(p.variant.as_deref(), Some("v8"));
        assert_eq!(p.to_string(), "linux/arm64/v8");
        for bad in ["", "linux", "linux/", "/amd64", "a/b/c/d", "linux/amd 64"] {
            assert!(bad.parse::<PlatformSpec>().is_err(), "{bad:?} was accepted");
        }
        assert_eq!(PlatformSpec::host().os, "linux");
        Ok(())
    }
}
