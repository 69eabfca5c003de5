//! A JSON Schema validator for the subset `schemars` emits for our reports (draft 2020-12):
//! `type` (one or a list), `const`, `enum`, `minimum`, `properties`, `required`,
//! `additionalProperties` (bool or schema), `items`, `anyOf`, `oneOf`, `allOf` and local
//! `$ref`s into `$defs`. Anything else it meets is an error, so a schema that grows a keyword
//! this does not check cannot pass unchecked.

use serde_json::Value;

/// Every way `doc` breaks `schema`, as `PATH: what`; empty when it validates.
pub fn validate(schema: &Value, doc: &Value) -> Vec<String> {
    let mut errs = Vec::new();
    check(schema, schema, doc, "$", &mut errs);
    errs
}

/// Keywords that only annotate.
const ANNOTATIONS: &[&str] = &["$schema", "$defs", "title", "description", "format"];

fn check(root: &Value, schema: &Value, doc: &Value, at: &str, errs: &mut Vec<String>) {
    let obj = match schema {
        Value::Bool(true) => return,
        Value::Bool(false) => {
            errs.push(format!("{at}: not allowed here"));
            return;
        }
        Value::Object(o) => o,
        other => {
            errs.push(format!("{at}: schema is not an object: {other}"));
            return;
        }
    };
    for (key, sub) in obj {
        match key.as_str() {
            k if ANNOTATIONS.contains(&k) => {}
            "$ref" => match sub.as_str().and_then(|r| resolve(root, r)) {
                Some(target) => check(root, target, doc, at, errs),
                None => errs.push(format!("{at}: unresolvable $ref {sub}")),
            },
            "type" => {
                let types: Vec<&str> = match sub {
                    Value::String(t) => vec![t.as_str()],
                    Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                    _ => Vec::new(),
                };
                if !types.iter().any(|t| has_type(doc, t)) {
                    errs.push(format!("{at}: {doc} is not of type {sub}"));
                }
            }
            "const" if doc != sub => errs.push(format!("{at}: {doc} is not {sub}")),
            "enum" if !sub.as_array().is_some_and(|a| a.contains(doc)) => {
                errs.push(format!("{at}: {doc} is not one of {sub}"));
            }
            "minimum" => {
                if let (Some(n), Some(min)) = (doc.as_f64(), sub.as_f64())
                    && n < min
                {
                    errs.push(format!("{at}: {n} < {min}"));
                }
            }
            "required" => {
                if let (Some(d), Some(req)) = (doc.as_object(), sub.as_array()) {
                    for name in req.iter().filter_map(Value::as_str) {
                        if !d.contains_key(name) {
                            errs.push(format!("{at}: missing required field {name:?}"));
                        }
                    }
                }
            }
            "properties" => {
                if let (Some(d), Some(props)) = (doc.as_object(), sub.as_object()) {
                    for (name, s) in props {
                        if let Some(v) = d.get(name) {
                            check(root, s, v, &format!("{at}.{name}"), errs);
                        }
                    }
                }
            }
            "additionalProperties" => {
                if let Some(d) = doc.as_object() {
                    let known = obj.get("properties").and_then(Value::as_object);
                    for (name, v) in d {
                        if !known.is_some_and(|k| k.contains_key(name)) {
                            check(root, sub, v, &format!("{at}.{name}"), errs);
                        }
                    }
                }
            }
            "items" => {
                if let Some(a) = doc.as_array() {
                    for (i, v) in a.iter().enumerate() {
                        check(root, sub, v, &format!("{at}[{i}]"), errs);
                    }
                }
            }
            "anyOf" | "oneOf" => {
                let branches = sub.as_array().map_or(&[][..], Vec::as_slice);
                let passing = branches
                    .iter()
                    .filter(|b| validate_in(root, b, doc, at).is_empty())
                    .count();
                let ok = if key == "oneOf" {
                    passing == 1
                } else {
                    passing >= 1
                };
                if !ok {
                    let why: Vec<String> = branches
                        .iter()
                        .flat_map(|b| validate_in(root, b, doc, at))
                        .collect();
                    errs.push(format!(
                        "{at}: {passing} of {} {key} branches match: {}",
                        branches.len(),
                        why.join("; ")
                    ));
                }
            }
            "allOf" => {
                for b in sub.as_array().map_or(&[][..], Vec::as_slice) {
                    check(root, b, doc, at, errs);
                }
            }
            "const" | "enum" => {}
            other => errs.push(format!(
                "{at}: schema keyword {other:?} is not checked here"
            )),
        }
    }
}

fn validate_in(root: &Value, schema: &Value, doc: &Value, at: &str) -> Vec<String> {
    let mut errs = Vec::new();
    check(root, schema, doc, at, &mut errs);
    errs
}

fn resolve<'a>(root: &'a Value, r: &str) -> Option<&'a Value> {
    root.pointer(r.strip_prefix('#')?)
}

fn has_type(v: &Value, t: &str) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64(),
        _ => false,
    }
}

#[test]
fn the_validator_catches_what_it_must() {
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "schema": {"type": "integer", "const": 1, "minimum": 0},
            "name": {"type": ["string", "null"]},
            "rows": {"type": "array", "items": {"$ref": "#/$defs/Row"}}
        },
        "required": ["schema", "rows"],
        "additionalProperties": false,
        "$defs": {"Row": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}}
    });
    let good = serde_json::json!({"schema": 1, "name": null, "rows": [{"n": 3}]});
    assert_eq!(validate(&schema, &good), Vec::<String>::new());
    for bad in [
        serde_json::json!({"schema": 2, "rows": []}),
        serde_json::json!({"schema": 1}),
        serde_json::json!({"schema": 1, "rows": [], "extra": true}),
        serde_json::json!({"schema": 1, "rows": [{"n": "3"}]}),
        serde_json::json!({"schema": 1, "rows": [{}]}),
        serde_json::json!({"schema": 1, "name": 5, "rows": []}),
    ] {
        assert!(!validate(&schema, &bad).is_empty(), "{bad} passed");
    }
    let unknown = serde_json::json!({"type": "string", "pattern": "^a"});
    assert!(!validate(&unknown, &serde_json::json!("a")).is_empty());
}
