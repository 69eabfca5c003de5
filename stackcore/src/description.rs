//! The few facts `stash` reads from a root's KIWI description (`image/config.xml`): the
//! image name and the author. Full description handling is in `kiwi`.

use quick_xml::events::Event;

use crate::{Error, Result};

/// What `stash` needs from a description.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DescriptionFacts {
    /// `<image name=...>`.
    pub name: Option<String>,
    /// `<description><author>`.
    pub author: Option<String>,
}

/// Reads the name and author from a description's XML. No DTD, no entities beyond the five
/// predefined ones: a document with a `<!DOCTYPE` is refused.
pub fn facts(xml: &[u8], origin: &str) -> Result<DescriptionFacts> {
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut buf = Vec::new();
    let mut facts = DescriptionFacts::default();
    let mut path: Vec<Vec<u8>> = Vec::new();
    let bad = |e: &dyn std::fmt::Display| {
        // Unusable input (exit 2), like any other description we cannot read.
        Error::Usage(format!("{origin}: not a readable KIWI description: {e}"))
    };
    loop {
        match reader.read_event_into(&mut buf).map_err(|e| bad(&e))? {
            Event::DocType(_) => return Err(bad(&"a DOCTYPE is not allowed (entity expansion)")),
            Event::Start(s) => {
                let name = s.name().as_ref().to_vec();
                if path.is_empty() {
                    if name != b"image" {
                        return Err(bad(&format!(
                            "root element is <{}>, not <image>",
                            String::from_utf8_lossy(&name)
                        )));
                    }
                    for a in s.attributes() {
                        let a = a.map_err(|e| bad(&e))?;
                        if a.key.as_ref() == b"name" {
                            facts.name =
                                Some(a.unescape_value().map_err(|e| bad(&e))?.into_owned());
                        }
                    }
                }
                path.push(name);
            }
            Event::End(_) => {
                path.pop();
            }
            Event::Text(t)
                if path.len() == 3
                    && path[1] == b"description"
                    && path[2] == b"author"
                    && facts.author.is_none() =>
            {
                facts.author = Some(t.unescape().map_err(|e| bad(&e))?.trim().to_owned());
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if facts.name.is_none() && path.is_empty() {
        return Err(bad(&"no <image name=...>"));
    }
    Ok(facts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_name_and_author() -> Result<()> {
        let xml = br#"<?xml version="1.0"?><image schemaversion="7.4" name="my-os"><description type="system"><author>A &amp; B</author></description></image>"#;
        let f = facts(xml, "t")?;
        assert_eq!(f.name.as_deref(), Some("my-os"));
        assert_eq!(f.author.as_deref(), Some("A & B"));
        assert!(facts(b"<!DOCTYPE x [<!ENTITY a 'b'>]><image name='x'/>", "t").is_err());
        assert!(facts(b"<other/>", "t").is_err());
        Ok(())
    }
}
