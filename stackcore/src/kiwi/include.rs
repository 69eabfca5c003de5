//! `<include from="…"/>` resolution: textual, top level only, one level deep,
//! exactly as kiwi's `include.xsl` does it.

use std::path::{Path, PathBuf};

use super::xml::{self, Document, Node};
use crate::{Error, Result};

/// Where `from` points, relative to `dir` (the directory of the including file).
fn include_path(from: &str, dir: &Path) -> PathBuf {
    let rel = from
        .strip_prefix("this://")
        .or_else(|| from.strip_prefix("file://"))
        .unwrap_or(from);
    // `file:///abs` leaves `/abs`, which `join` keeps absolute.
    dir.join(rel)
}

/// Replaces each top-level `<include>` of `doc` by the element children of the file it
/// names. `dir` is the directory `this://` and relative paths resolve against; without one
/// (bytes read from an image), any include is an error. Returns the number resolved.
pub fn resolve_includes(doc: &mut Document, origin: &str, dir: Option<&Path>) -> Result<usize> {
    let mut count = 0;
    let mut out = Vec::with_capacity(doc.root.children.len());
    for node in std::mem::take(&mut doc.root.children) {
        let Node::Element(el) = &node else {
            out.push(node);
            continue;
        };
        if el.name != "include" || el.ns.is_some() {
            out.push(node);
            continue;
        }
        let from = el
            .attr("from")
            .ok_or_else(|| Error::Usage(format!("{origin}: <include> without from=")))?;
        let dir = dir.ok_or_else(|| {
            Error::Usage(format!("{origin}: <include from=\"{from}\"> cannot be resolved: no directory to resolve it in"))
        })?;
        let path = include_path(from, dir);
        let bytes = std::fs::read(&path).map_err(|e| {
            Error::Usage(format!(
                "{origin}: <include from=\"{from}\">: {}: {e}",
                path.display()
            ))
        })?;
        let inc_origin = path.display().to_string();
        let inc = xml::parse(&bytes, &inc_origin)?;
        if inc.root.name != "image" {
            return Err(Error::Usage(format!(
                "{inc_origin}: included file has root <{}>, not <image>",
                inc.root.name
            )));
        }
        for child in inc.root.children {
            if let Node::Element(e) = child {
                if e.name == "include" && e.ns.is_none() {
                    return Err(Error::Usage(format!(
                        "{inc_origin}: nested <include from=\"{}\"> (kiwi resolves includes only one level deep)",
                        e.attr("from").unwrap_or("")
                    )));
                }
                out.push(Node::Element(e));
            }
            // Top-level comments of the included file are dropped: kiwi copies only image/*.
        }
        count += 1;
    }
    doc.root.children = out;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_in_place_and_refuses_nesting() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let d = dir.path();
        std::fs::create_dir(d.join("c")).map_err(|e| Error::io(d, e))?;
        let write = |p: &str, s: &str| std::fs::write(d.join(p), s).map_err(|e| Error::io(p, e));
        write(
            "c/a.xml",
            "<image x=\"1\"><!-- dropped --><users><!-- kept --><user name=\"a\"/></users><repository/></image>",
        )?;
        write("c/nested.xml", "<image><include from=\"a.xml\"/></image>")?;
        write("c/notimage.xml", "<foo/>")?;
        let abs = format!("file://{}", d.join("c/a.xml").display());

        let cases: &[(&str, std::result::Result<&str, &str>)] = &[
            (
                "this://./c/a.xml",
                Ok("<p/><users><!-- kept --><user name=\"a\"/></users><repository/><q/>"),
            ),
            (
                "c/a.xml",
                Ok("<p/><users><!-- kept --><user name=\"a\"/></users><repository/><q/>"),
            ),
            (
                &abs,
                Ok("<p/><users><!-- kept --><user name=\"a\"/></users><repository/><q/>"),
            ),
            ("this://c/missing.xml", Err("missing.xml")),
            ("this://c/nested.xml", Err("nested <include")),
            ("this://c/notimage.xml", Err("not <image>")),
        ];
        for (from, want) in cases {
            let text = format!("<image><p/><include from=\"{from}\"/><q/></image>");
            let mut doc = xml::parse(text.as_bytes(), "t")?;
            let got = resolve_includes(&mut doc, "t", Some(d));
            match (want, got) {
                (Ok(inner), Ok(n)) => {
                    assert_eq!(n, 1);
                    let want = xml::parse(format!("<image>{inner}</image>").as_bytes(), "w")?;
                    assert_eq!(doc.root, want.root, "{from}");
                }
                (Err(msg), Err(Error::Usage(m))) => assert!(m.contains(msg), "{from}: {m}"),
                (w, g) => panic!("{from}: want {w:?}, got {g:?}"),
            }
        }
        let mut doc = xml::parse(b"<image><include from=\"x\"/></image>", "t")?;
        assert!(resolve_includes(&mut doc, "t", None).is_err());
        Ok(())
    }
}
