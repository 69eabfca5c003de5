//! A small XML tree that keeps what a KIWI description author cares about: element and
//! attribute order, comments, and byte-exact text. Parsing and canonical serialisation.
//!
//! Hostile input is refused rather than tamed: a `DOCTYPE` is an error (so there is no
//! internal subset and no entity can ever be expanded), unknown entity references are
//! errors, and size and nesting depth are bounded. KIWI files never need any of that.

use std::fmt::Write as _;

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

use crate::{Error, Result};

/// The namespace of kiwimerge directives. Recognised by URI, never by prefix.
pub const KM_NS: &str = "urn:kiwimerge:1";

/// Largest input accepted. The biggest real description we know (the `AlmaLinux` export) is
/// 40 KiB; 16 MiB leaves room for anything legitimate and bounds memory for hostile input.
pub const MAX_INPUT_BYTES: usize = 16 * 1024 * 1024;

/// Deepest element nesting accepted. KIWI's schema nests at most 7 levels
/// (`image/preferences/type/bootloader/bootloadersettings/environment/env`); the limit only
/// exists so that a pathological input cannot exhaust the stack of the recursive passes.
pub const MAX_DEPTH: usize = 64;

/// One attribute, in the order it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    /// The qualified name as written (`km:action`, `xmlns:xsi`, `name`).
    pub name: String,
    /// The resolved namespace URI, `None` for unprefixed attributes and declarations.
    pub ns: Option<String>,
    /// The unescaped value.
    pub value: String,
}

impl Attr {
    /// Whether this is a namespace declaration (`xmlns` or `xmlns:p`).
    pub fn is_ns_decl(&self) -> bool {
        self.name == "xmlns" || self.name.starts_with("xmlns:")
    }

    /// Whether this attribute is a kiwimerge directive or declares the directive namespace.
    pub fn is_km(&self) -> bool {
        self.ns.as_deref() == Some(KM_NS) || (self.is_ns_decl() && self.value == KM_NS)
    }
}

/// A node of the tree. Whitespace-only text is never stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// An element.
    Element(Element),
    /// Non-whitespace text of a text-only element, byte-exact.
    Text(String),
    /// A comment's content (between `<!--` and `-->`).
    Comment(String),
    /// A processing instruction's content (between `<?` and `?>`), prolog only.
    Pi(String),
}

/// An element with its attributes and children.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    /// The qualified name as written.
    pub name: String,
    /// The resolved namespace URI of the element, if any.
    pub ns: Option<String>,
    /// Attributes (and namespace declarations) in document order.
    pub attrs: Vec<Attr>,
    /// Children in document order.
    pub children: Vec<Node>,
    /// Set on a `<type>` whose `primary="true"` came from an overlay; never
    /// serialised.
    pub overlay_primary: bool,
}

impl Element {
    /// A new element without attributes or children.
    pub fn new(name: &str) -> Self {
        Element {
            name: name.to_owned(),
            ..Element::default()
        }
    }

    /// The value of the unprefixed attribute `name`.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.name == name && a.ns.is_none())
            .map(|a| a.value.as_str())
    }

    /// The value of the directive `km:<local>` (matched by namespace URI).
    pub fn km_attr(&self, local: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.ns.as_deref() == Some(KM_NS) && local_name(&a.name) == local)
            .map(|a| a.value.as_str())
    }

    /// Sets `name` to `value`: in place if present, appended otherwise.
    pub fn set_attr(&mut self, name: &str, value: &str) {
        if let Some(a) = self.attrs.iter_mut().find(|a| a.name == name) {
            value.clone_into(&mut a.value);
        } else {
            self.attrs.push(Attr {
                name: name.to_owned(),
                ns: None,
                value: value.to_owned(),
            });
        }
    }

    /// Removes the attribute `name`; returns whether it was there.
    pub fn remove_attr(&mut self, name: &str) -> bool {
        let before = self.attrs.len();
        self.attrs.retain(|a| a.name != name);
        before != self.attrs.len()
    }

    /// The element children, in order.
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            _ => None,
        })
    }

    /// The element children, mutably.
    pub fn elements_mut(&mut self) -> impl Iterator<Item = &mut Element> {
        self.children.iter_mut().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            _ => None,
        })
    }

    /// The concatenated text children (the text of a text-only element).
    pub fn text(&self) -> String {
        let mut s = String::new();
        for n in &self.children {
            if let Node::Text(t) = n {
                s.push_str(t);
            }
        }
        s
    }

    /// Whether this element has any element child.
    pub fn has_element_children(&self) -> bool {
        self.children.iter().any(|n| matches!(n, Node::Element(_)))
    }

    /// Removes every `km:` attribute and the declaration of the directive namespace, here
    /// and below.
    pub fn strip_km(&mut self) {
        self.attrs.retain(|a| !a.is_km());
        for e in self.elements_mut() {
            e.strip_km();
        }
    }

    /// Visits this element and all descendants, depth first.
    pub fn walk(&self, f: &mut dyn FnMut(&Element)) {
        f(self);
        for e in self.elements() {
            e.walk(f);
        }
    }

    /// Visits this element and all descendants mutably, depth first.
    pub fn walk_mut(&mut self, f: &mut dyn FnMut(&mut Element)) {
        f(self);
        for e in self.elements_mut() {
            e.walk_mut(f);
        }
    }
}

/// The part of a qualified name after the prefix.
pub fn local_name(qname: &str) -> &str {
    qname.rsplit_once(':').map_or(qname, |(_, l)| l)
}

/// A parsed document: the prolog (comments and PIs before the root) and the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Comments and PIs before the root element, except the XML declaration.
    pub prolog: Vec<Node>,
    /// The root element.
    pub root: Element,
}

/// Refuses characters XML 1.0 does not allow at all (C0 controls other than tab, newline
/// and carriage return; U+FFFE, U+FFFF), whether written or made by a character reference:
/// what the serialiser would write back could not be read again.
fn check_chars(s: &str, origin: &str, what: &str) -> Result<()> {
    match s.char_indices().find(|&(_, c)| {
        (c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || matches!(c, '\u{FFFE}' | '\u{FFFF}')
    }) {
        Some((i, c)) => Err(input_err(
            origin,
            format!(
                "{what}: character U+{:04X} at byte {i} is not allowed in XML",
                u32::from(c)
            ),
        )),
        None => Ok(()),
    }
}

/// Refuses a name that is not an XML `Name` (a letter, `_` or `:` first, then also digits,
/// `-` and `.`; any non-ASCII character counts as a letter). quick-xml passes on quotes or
/// `=` in an attribute name, which the serialiser would write back as broken markup.
fn check_name(name: &str, origin: &str, what: &str) -> Result<()> {
    let start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':' || !c.is_ascii();
    let rest = |c: char| start(c) || c.is_ascii_digit() || c == '-' || c == '.';
    let mut chars = name.chars();
    if chars.next().is_some_and(start) && chars.all(rest) {
        Ok(())
    } else {
        Err(input_err(
            origin,
            format!("{what} {name:?} is not a valid XML name"),
        ))
    }
}

fn input_err(origin: &str, msg: impl std::fmt::Display) -> Error {
    Error::Usage(format!("{origin}: {msg}"))
}

/// Parses `bytes` (UTF-8, optional BOM) into a [`Document`]. `origin` names the input in
/// error messages. Every refusal is an [`Error::Usage`]: the input is not a readable
/// description.
pub fn parse(bytes: &[u8], origin: &str) -> Result<Document> {
    if bytes.len() > MAX_INPUT_BYTES {
        return Err(input_err(
            origin,
            format!(
                "input is {} bytes, more than the limit of {MAX_INPUT_BYTES}",
                bytes.len()
            ),
        ));
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes)
        .map_err(|e| input_err(origin, format!("not UTF-8 ({e}); only UTF-8 is accepted")))?;
    check_chars(text, origin, "the input")?;
    let mut reader = NsReader::from_str(text);
    reader.config_mut().trim_text(false);
    reader.config_mut().check_end_names = true;

    let mut prolog = Vec::new();
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    // Text pieces (text and CDATA events) of the current element, joined before storing.
    let mut pending_text = String::new();

    loop {
        let pos = reader.buffer_position();
        let (ns_res, ev) = reader
            .read_resolved_event()
            .map_err(|e| input_err(origin, format!("XML error at byte {pos}: {e}")))?;
        match ev {
            Event::Decl(d) => {
                if pos != 0 {
                    return Err(input_err(
                        origin,
                        "an XML declaration is only allowed at the very start",
                    ));
                }
                if let Some(enc) = d.encoding() {
                    let enc = enc.map_err(|e| input_err(origin, e))?;
                    if !enc.eq_ignore_ascii_case(b"utf-8") && !enc.eq_ignore_ascii_case(b"utf8") {
                        return Err(input_err(
                            origin,
                            format!(
                                "encoding {:?} declared; only UTF-8 is accepted",
                                String::from_utf8_lossy(&enc)
                            ),
                        ));
                    }
                }
            }
            Event::DocType(_) => {
                return Err(input_err(
                    origin,
                    "DOCTYPE is not allowed (KIWI descriptions have none; refusing it means no \
                     entity is ever expanded)",
                ));
            }
            Event::Start(ref s) | Event::Empty(ref s) => {
                if root.is_some() {
                    return Err(input_err(origin, "content after the root element"));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(input_err(
                        origin,
                        format!("elements nested deeper than {MAX_DEPTH} levels"),
                    ));
                }
                flush_text(&mut stack, &mut pending_text);
                let name = String::from_utf8(s.name().as_ref().to_vec())
                    .map_err(|e| input_err(origin, e))?;
                check_name(&name, origin, "element")?;
                let ns = resolve_ns(&ns_res, origin, &name)?;
                let mut attrs = Vec::new();
                for a in s.attributes() {
                    let a = a.map_err(|e| input_err(origin, format!("in <{name}>: {e}")))?;
                    let qname = String::from_utf8(a.key.as_ref().to_vec())
                        .map_err(|e| input_err(origin, e))?;
                    check_name(&qname, origin, &format!("attribute of <{name}>"))?;
                    let value = a
                        .unescape_value()
                        .map_err(|e| input_err(origin, format!("in <{name} {qname}>: {e}")))?
                        .into_owned();
                    check_chars(&value, origin, &format!("<{name} {qname}>"))?;
                    let attr_ns = if qname == "xmlns" || qname.starts_with("xmlns:") {
                        None
                    } else {
                        let (r, _) = reader.resolve_attribute(a.key);
                        resolve_ns(&r, origin, &qname)?
                    };
                    attrs.push(Attr {
                        name: qname,
                        ns: attr_ns,
                        value,
                    });
                }
                let el = Element {
                    name,
                    ns,
                    attrs,
                    children: Vec::new(),
                    overlay_primary: false,
                };
                if matches!(ev, Event::Start(_)) {
                    stack.push(el);
                } else {
                    close(el, &mut stack, &mut root);
                }
            }
            Event::End(_) => {
                flush_text(&mut stack, &mut pending_text);
                let el = stack
                    .pop()
                    .ok_or_else(|| input_err(origin, "unbalanced end tag"))?;
                check_mixed(Some(&el), origin)?;
                close(el, &mut stack, &mut root);
            }
            Event::Text(t) => {
                let s = t
                    .unescape()
                    .map_err(|e| input_err(origin, format!("text: {e}")))?;
                check_chars(&s, origin, "text")?;
                if stack.is_empty() {
                    if !s.trim().is_empty() {
                        return Err(input_err(origin, "text outside the root element"));
                    }
                } else {
                    pending_text.push_str(&s);
                }
            }
            Event::CData(c) => {
                let s = std::str::from_utf8(&c).map_err(|e| input_err(origin, e))?;
                if stack.is_empty() {
                    return Err(input_err(origin, "CDATA outside the root element"));
                }
                pending_text.push_str(s);
            }
            Event::Comment(c) => {
                flush_text(&mut stack, &mut pending_text);
                let s = std::str::from_utf8(&c)
                    .map_err(|e| input_err(origin, e))?
                    .to_owned();
                match stack.last_mut() {
                    Some(parent) => parent.children.push(Node::Comment(s)),
                    None if root.is_none() => prolog.push(Node::Comment(s)),
                    None => {} // after the root: not part of the description
                }
            }
            Event::PI(p) => {
                let s = std::str::from_utf8(&p)
                    .map_err(|e| input_err(origin, e))?
                    .to_owned();
                let target = s.split([' ', '\t', '\r', '\n']).next().unwrap_or_default();
                check_name(target, origin, "processing instruction target")?;
                if target.eq_ignore_ascii_case("xml") {
                    return Err(input_err(
                        origin,
                        "an XML declaration is only allowed at the very start",
                    ));
                }
                if stack.is_empty() && root.is_none() {
                    prolog.push(Node::Pi(s));
                } else if !stack.is_empty() {
                    return Err(input_err(
                        origin,
                        "processing instructions are only allowed in the prolog",
                    ));
                }
            }
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(input_err(
            origin,
            format!(
                "unexpected end of input inside <{}>",
                stack[stack.len() - 1].name
            ),
        ));
    }
    let root = root.ok_or_else(|| input_err(origin, "no root element"))?;
    Ok(Document { prolog, root })
}

fn resolve_ns(r: &ResolveResult<'_>, origin: &str, qname: &str) -> Result<Option<String>> {
    match r {
        ResolveResult::Unbound => Ok(None),
        ResolveResult::Bound(ns) => Ok(Some(
            String::from_utf8(ns.as_ref().to_vec()).map_err(|e| input_err(origin, e))?,
        )),
        ResolveResult::Unknown(p) => Err(input_err(
            origin,
            format!(
                "{qname}: undeclared namespace prefix {:?}",
                String::from_utf8_lossy(p)
            ),
        )),
    }
}

/// Stores the text gathered so far into the current element. Whitespace-only text is
/// dropped; non-whitespace text next to element children is mixed content, which KIWI
/// does not have.
fn flush_text(stack: &mut [Element], pending: &mut String) {
    if pending.is_empty() {
        return;
    }
    let text = std::mem::take(pending);
    if text.trim().is_empty() {
        return;
    }
    if let Some(el) = stack.last_mut() {
        el.children.push(Node::Text(text));
    }
}

fn check_mixed(el: Option<&Element>, origin: &str) -> Result<()> {
    if let Some(el) = el
        && el.has_element_children()
        && el.children.iter().any(|n| matches!(n, Node::Text(_)))
    {
        return Err(input_err(
            origin,
            format!(
                "<{}> has both text and element children (mixed content)",
                el.name
            ),
        ));
    }
    Ok(())
}

fn close(el: Element, stack: &mut [Element], root: &mut Option<Element>) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(Node::Element(el)),
        None => *root = Some(el),
    }
}

/// Serialises `doc` in the canonical format of kiwimerge. `km:` attributes and the directive
/// namespace declaration are never written.
pub fn serialize(doc: &Document) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
    for n in &doc.prolog {
        write_misc(&mut out, n, 0);
    }
    write_element(&mut out, &doc.root, 0);
    out
}

fn indent(out: &mut String, level: usize) {
    for _ in 0..level {
        out.push_str("    ");
    }
}

fn write_misc(out: &mut String, n: &Node, level: usize) {
    match n {
        Node::Comment(c) => {
            indent(out, level);
            let _ = writeln!(out, "<!--{c}-->");
        }
        Node::Pi(p) => {
            indent(out, level);
            let _ = writeln!(out, "<?{p}?>");
        }
        Node::Element(e) => write_element(out, e, level),
        Node::Text(_) => {}
    }
}

fn write_element(out: &mut String, el: &Element, level: usize) {
    indent(out, level);
    out.push('<');
    out.push_str(&el.name);
    for a in el.attrs.iter().filter(|a| !a.is_km()) {
        out.push(' ');
        out.push_str(&a.name);
        out.push_str("=\"");
        escape_attr(out, &a.value);
        out.push('"');
    }
    if el.has_element_children() {
        out.push_str(">\n");
        for n in &el.children {
            if !matches!(n, Node::Text(_)) {
                write_misc(out, n, level + 1);
            }
        }
        indent(out, level);
        let _ = writeln!(out, "</{}>", el.name);
    } else {
        let text = el.text();
        if !text.trim().is_empty() {
            out.push('>');
            escape_text(out, &text);
            let _ = writeln!(out, "</{}>", el.name);
        } else if el.children.iter().any(|n| matches!(n, Node::Comment(_))) {
            out.push_str(">\n");
            for n in &el.children {
                if matches!(n, Node::Comment(_)) {
                    write_misc(out, n, level + 1);
                }
            }
            indent(out, level);
            let _ = writeln!(out, "</{}>", el.name);
        } else {
            out.push_str("/>\n");
        }
    }
}

/// Text escaping of kiwimerge: only what XML requires, so non-ASCII and quotes stay as written.
fn escape_text(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
}

/// Attribute escaping of kiwimerge. Whitespace characters are escaped so that attribute
/// value normalisation on re-reading gives back the same value. `'` is not escaped (unlike
/// `quick_xml::escape::escape`) because values are always double-quoted.
fn escape_attr(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_canonically() -> Result<()> {
        let cases: &[(&str, &str)] = &[
            (
                "\u{feff}<?xml version=\"1.0\"?><!-- p --><image b=\"1\" a=\"x&lt;&gt;&amp;&quot;'\"><a>  t &amp; ü </a>\n<!--c--><e/><f>\n</f></image>",
                "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<!-- p -->\n<image b=\"1\" a=\"x&lt;&gt;&amp;&quot;'\">\n    <a>  t &amp; ü </a>\n    <!--c-->\n    <e/>\n    <f/>\n</image>\n",
            ),
            (
                "<image><a><![CDATA[x<y]]></a><b a=\"1&#10;2\"/></image>",
                "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<image>\n    <a>x&lt;y</a>\n    <b a=\"1&#10;2\"/>\n</image>\n",
            ),
            (
                "<image xmlns:km=\"urn:kiwimerge:1\" xmlns:x=\"urn:x\" km:reset=\"a\" x:y=\"1\"/>",
                "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<image xmlns:x=\"urn:x\" x:y=\"1\"/>\n",
            ),
        ];
        for (input, want) in cases {
            let doc = parse(input.as_bytes(), "t")?;
            assert_eq!(serialize(&doc), *want, "input {input}");
        }
        Ok(())
    }

    #[test]
    fn refuses_bad_input() {
        let cases: &[(&str, &str)] = &[
            (
                "<!DOCTYPE image [<!ENTITY a \"b\">]><image>&a;</image>",
                "DOCTYPE",
            ),
            ("<image a'b'=\"1\"/>", "not a valid XML name"),
            (
                "<?xml version=\"1.0\"?><?xml version=\"1.0\"?><image/>",
                "only allowed at the very start",
            ),
            ("<image name=\"a&#1;b\"/>", "U+0001"),
            ("<image>\u{0}</image>", "U+0000"),
            ("<image>&lol;</image>", "text"),
            ("<image a=\"&lol;\"/>", "<image a>"),
            ("<image><a>x<b/></a></image>", "mixed content"),
            ("<image><a></b></image>", "XML error"),
            ("<image p:x=\"1\"/>", "undeclared namespace prefix"),
            (
                "<?xml version=\"1.0\" encoding=\"latin1\"?><image/>",
                "only UTF-8",
            ),
            ("<image a=\"1\" a=\"2\"/>", "in <image>"),
            ("<image/><image/>", "after the root"),
            ("<image>", "end of input"),
            ("", "no root element"),
        ];
        for (input, want) in cases {
            match parse(input.as_bytes(), "t") {
                Err(Error::Usage(m)) => assert!(m.contains(want), "{input}: {m}"),
                other => panic!("{input}: expected a usage error, got {other:?}"),
            }
        }
    }

    #[test]
    fn refuses_deep_and_large_input() {
        let deep = format!(
            "{}{}",
            "<a>".repeat(MAX_DEPTH + 1),
            "</a>".repeat(MAX_DEPTH + 1)
        );
        assert!(
            matches!(parse(deep.as_bytes(), "t"), Err(Error::Usage(m)) if m.contains("deeper"))
        );
        let big = vec![b' '; MAX_INPUT_BYTES + 1];
        assert!(matches!(parse(&big, "t"), Err(Error::Usage(m)) if m.contains("limit")));
    }

    #[test]
    fn directives_are_found_by_uri_not_prefix() -> Result<()> {
        let doc = parse(b"<image xmlns:zz=\"urn:kiwimerge:1\"><p zz:action=\"remove\" km:x=\"1\" xmlns:km=\"urn:other\"/></image>", "t")?;
        let p = doc.root.elements().next().expect("child");
        assert_eq!(p.km_attr("action"), Some("remove"));
        assert_eq!(p.km_attr("x"), None);
        Ok(())
    }
}
