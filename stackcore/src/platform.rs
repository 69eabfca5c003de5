//! `--platform os/arch[/variant]` and picking one image out of an image index.
//!
//! Platforms are normalised as containerd's `platforms` package does, so `uname -m` names
//! work: `x86_64` is `amd64`, `aarch64` is `arm64`, `armhf`/`armv7l` are `arm/v7`,
//! `i386`/`i686` are `386`; `arm` alone means `arm/v7`, and `arm64/v8` is `arm64`.

use std::fmt;
use std::str::FromStr;

use crate::oci::types::{Descriptor, ImageConfig, Index, Platform, host_arch};
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
        PlatformSpec::normalized("linux", host_arch(), None)
    }

    /// `os/arch/variant` normalised (see the module documentation).
    pub fn normalized(os: &str, arch: &str, variant: Option<&str>) -> PlatformSpec {
        let os = match os.to_ascii_lowercase().as_str() {
            "macos" => "darwin".to_owned(),
            o => o.to_owned(),
        };
        let arch_l = arch.to_ascii_lowercase();
        let variant_l = variant.map(str::to_ascii_lowercase);
        let v = variant_l.as_deref();
        let (architecture, variant) = match arch_l.as_str() {
            "i386" | "i486" | "i586" | "i686" | "x86" | "386" => ("386", None),
            "x86_64" | "x86-64" | "amd64" => ("amd64", v.filter(|v| *v != "v1")),
            "aarch64" | "arm64" => (
                "arm64",
                match v {
                    Some("8" | "v8" | "v8.0") | None => None,
                    Some("9" | "9.0" | "v9.0") => Some("v9"),
                    Some(other) => Some(other),
                },
            ),
            "armhf" | "armv7l" | "armv7" => ("arm", Some("v7")),
            "armel" | "armv6l" => ("arm", Some("v6")),
            "armv5tel" | "armv5l" => ("arm", Some("v5")),
            "arm" => (
                "arm",
                match v {
                    None | Some("7") => Some("v7"),
                    Some("5") => Some("v5"),
                    Some("6") => Some("v6"),
                    Some("8") => Some("v8"),
                    Some(other) => Some(other),
                },
            ),
            "ppc64el" => ("ppc64le", v),
            other => (other, v),
        };
        PlatformSpec {
            os,
            architecture: architecture.to_owned(),
            variant: variant.map(str::to_owned),
        }
    }

    /// An index entry's platform, normalised.
    pub fn of(p: &Platform) -> PlatformSpec {
        PlatformSpec::normalized(&p.os, &p.architecture, p.variant.as_deref())
    }

    /// The platform an image config records (`os`, `architecture`, `variant`), normalised.
    pub fn of_config(c: &ImageConfig) -> PlatformSpec {
        let variant = c.extra.get("variant").and_then(|v| v.as_str());
        PlatformSpec::normalized(&c.os, &c.architecture, variant)
    }

    /// Whether an image of platform `have` serves this spec: same os and architecture, and
    /// the same variant when this spec names one.
    pub fn matches(&self, have: &PlatformSpec) -> bool {
        self.os == have.os
            && self.architecture == have.architecture
            && (self.variant.is_none() || self.variant == have.variant)
    }

    /// Picks this platform's manifest from `index`. A spec without a variant takes an entry
    /// without one first, then the first of that os/arch (`arm64` images say `v8` or nothing).
    pub fn pick<'a>(&self, index: &'a Index) -> Option<&'a Descriptor> {
        let same_arch = |d: &&Descriptor| {
            d.platform.as_ref().is_some_and(|p| {
                let p = PlatformSpec::of(p);
                p.os == self.os && p.architecture == self.architecture
            })
        };
        let variant = |d: &Descriptor| {
            d.platform
                .as_ref()
                .and_then(|p| PlatformSpec::of(p).variant)
        };
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
        Ok(PlatformSpec::normalized(
            parts[0],
            parts[1],
            parts.get(2).copied(),
        ))
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
        let p: PlatformSpec = "linux/arm/v6".parse()?;
        assert_eq!(p.variant.as_deref(), Some("v6"));
        assert_eq!(p.to_string(), "linux/arm/v6");
        for bad in ["", "linux", "linux/", "/amd64", "a/b/c/d", "linux/amd 64"] {
            assert!(bad.parse::<PlatformSpec>().is_err(), "{bad:?} was accepted");
        }
        assert_eq!(PlatformSpec::host().os, "linux");
        Ok(())
    }

    #[test]
    fn normalises_as_containerd_does() -> Result<()> {
        let table = [
            ("linux/x86_64", "linux/amd64"),
            ("linux/x86-64", "linux/amd64"),
            ("linux/amd64", "linux/amd64"),
            ("linux/amd64/v1", "linux/amd64"),
            ("linux/amd64/v3", "linux/amd64/v3"),
            ("Linux/X86_64", "linux/amd64"),
            ("linux/aarch64", "linux/arm64"),
            ("linux/aarch64/v8", "linux/arm64"),
            ("linux/arm64/8", "linux/arm64"),
            ("linux/arm64/v8", "linux/arm64"),
            ("linux/arm64/9", "linux/arm64/v9"),
            ("linux/armhf", "linux/arm/v7"),
            ("linux/armv7l", "linux/arm/v7"),
            ("linux/armel", "linux/arm/v6"),
            ("linux/arm", "linux/arm/v7"),
            ("linux/arm/7", "linux/arm/v7"),
            ("linux/arm/6", "linux/arm/v6"),
            ("linux/arm/v5", "linux/arm/v5"),
            ("linux/i386", "linux/386"),
            ("linux/i686", "linux/386"),
            ("linux/386", "linux/386"),
            ("linux/ppc64le", "linux/ppc64le"),
            ("linux/s390x", "linux/s390x"),
            ("linux/riscv64", "linux/riscv64"),
            ("macos/arm64", "darwin/arm64"),
        ];
        for (given, want) in table {
            assert_eq!(given.parse::<PlatformSpec>()?.to_string(), want, "{given}");
        }
        Ok(())
    }

    #[test]
    fn configs_and_matching() -> Result<()> {
        let config = |arch: &str, variant: Option<&str>| -> Result<ImageConfig> {
            let mut v = serde_json::json!({
                "architecture": arch, "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": []}
            });
            if let Some(var) = variant {
                v["variant"] = serde_json::json!(var);
            }
            serde_json::from_value(v).map_err(|e| Error::Other(e.to_string()))
        };
        let arm64 = PlatformSpec::of_config(&config("arm64", Some("v8"))?);
        assert_eq!(arm64.to_string(), "linux/arm64");
        let want: PlatformSpec = "linux/aarch64".parse()?;
        assert!(want.matches(&arm64));
        let amd64: PlatformSpec = "linux/x86_64".parse()?;
        assert!(!amd64.matches(&arm64));
        let armv6 = PlatformSpec::of_config(&config("arm", Some("v6"))?);
        assert!(!"linux/armhf".parse::<PlatformSpec>()?.matches(&armv6));
        assert!("linux/arm/v6".parse::<PlatformSpec>()?.matches(&armv6));
        // A spec without a variant takes any variant of its architecture.
        let v3 = PlatformSpec::of_config(&config("amd64", Some("v3"))?);
        assert!(amd64.matches(&v3));
        Ok(())
    }
}
