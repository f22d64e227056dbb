//! A small validator for the JSON Schema subset used by the Console OpenAPI
//! spec and the Akash SDL schema.
//!
//! Why not the `jsonschema` crate: it does not know OpenAPI 3.0's `nullable`,
//! and it pulls in dozens of crates on a 2-core CI. This covers what the two
//! documents use: `$ref`, `type`, `nullable`, `enum`, `const`, `required`,
//! `properties`, `additionalProperties`, `patternProperties`, `items`,
//! `minItems`/`maxItems`, `contains`, `minProperties`, `minimum`/`maximum`,
//! `exclusiveMinimum`, `minLength`, `pattern`, `allOf`/`anyOf`/`oneOf`/`not`,
//! `if`/`then`. Unknown keywords are ignored, as JSON Schema says.

use regex::Regex;
use serde_json::Value;

/// Validates `value` against `schema`, resolving `#/...` refs in `root`.
/// Returns every violation as `path: reason`.
pub fn validate(root: &Value, schema: &Value, value: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    check(root, schema, value, "$", &mut errors, 0);
    errors
}

fn resolve<'a>(root: &'a Value, reference: &str) -> Option<&'a Value> {
    root.pointer(reference.strip_prefix('#')?)
}

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.as_f64().is_some_and(|f| f.fract() == 0.0),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        _ => true,
    }
}

/// The OpenAPI spec writes `^d+$` where it means `^\d+$` (a lost backslash);
/// taken literally no dseq would match, so read it as meant.
fn pattern(p: &str) -> Option<Regex> {
    let p = if p == "^d+$" { r"^\d+$" } else { p };
    Regex::new(p).ok()
}

fn check(root: &Value, s: &Value, v: &Value, path: &str, errs: &mut Vec<String>, depth: u32) {
    if depth > 64 {
        errs.push(format!("{path}: schema nesting too deep"));
        return;
    }
    let Some(s) = s.as_object() else { return };
    let mut fail = |m: String| errs.push(format!("{path}: {m}"));
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        match resolve(root, r) {
            Some(target) => check(root, target, v, path, errs, depth + 1),
            None => errs.push(format!("{path}: unresolved $ref {r}")),
        }
        return;
    }
    if v.is_null() && s.get("nullable").and_then(Value::as_bool) == Some(true) {
        return;
    }
    match s.get("type") {
        Some(Value::String(t)) if !type_ok(t, v) => return fail(format!("expected {t}, got {v}")),
        Some(Value::Array(ts)) if !ts.iter().filter_map(Value::as_str).any(|t| type_ok(t, v)) => {
            return fail(format!("expected one of {ts:?}"));
        }
        _ => {}
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        // YAML reads the SDL schema's `off` as false; compare loosely.
        if !e
            .iter()
            .any(|x| x == v || (x == &Value::Bool(false) && v == "off"))
        {
            fail(format!("{v} not in enum"));
        }
    }
    if let Some(c) = s.get("const")
        && c != v
    {
        fail(format!("expected const {c}"));
    }
    if let Some(n) = v.as_f64() {
        let num = |k: &str| s.get(k).and_then(Value::as_f64);
        if num("minimum").is_some_and(|m| n < m) {
            fail(format!("{n} below minimum"));
        }
        if num("maximum").is_some_and(|m| n > m) {
            fail(format!("{n} above maximum"));
        }
        if num("exclusiveMinimum").is_some_and(|m| n <= m) {
            fail(format!("{n} not above exclusiveMinimum"));
        }
    }
    if let Some(text) = v.as_str() {
        if s.get("minLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| (text.chars().count() as u64) < m)
        {
            fail("string too short".into());
        }
        if let Some(p) = s.get("pattern").and_then(Value::as_str) {
            match pattern(p) {
                Some(re) if !re.is_match(text) => fail(format!("{text:?} does not match {p}")),
                None => fail(format!("bad pattern {p}")),
                _ => {}
            }
        }
    }
    if let Some(obj) = v.as_object() {
        for r in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(k) = r.as_str()
                && !obj.contains_key(k)
            {
                errs.push(format!("{path}: missing required {k}"));
            }
        }
        if s.get("minProperties")
            .and_then(Value::as_u64)
            .is_some_and(|m| (obj.len() as u64) < m)
        {
            errs.push(format!("{path}: too few properties"));
        }
        let props = s.get("properties").and_then(Value::as_object);
        let pats: Vec<(Regex, &Value)> = s
            .get("patternProperties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(p, sch)| Some((pattern(p)?, sch)))
            .collect();
        for (k, item) in obj {
            let sub = format!("{path}.{k}");
            let mut matched = false;
            if let Some(ps) = props.and_then(|p| p.get(k)) {
                matched = true;
                check(root, ps, item, &sub, errs, depth + 1);
            }
            for (re, ps) in &pats {
                if re.is_match(k) {
                    matched = true;
                    check(root, ps, item, &sub, errs, depth + 1);
                }
            }
            if !matched {
                match s.get("additionalProperties") {
                    Some(Value::Bool(false)) => errs.push(format!("{sub}: property not allowed")),
                    Some(ap @ Value::Object(_)) => check(root, ap, item, &sub, errs, depth + 1),
                    _ => {}
                }
            }
        }
    }
    if let Some(arr) = v.as_array() {
        if let Some(items) = s.get("items") {
            for (i, item) in arr.iter().enumerate() {
                check(root, items, item, &format!("{path}[{i}]"), errs, depth + 1);
            }
        }
        if s.get("minItems")
            .and_then(Value::as_u64)
            .is_some_and(|m| (arr.len() as u64) < m)
        {
            errs.push(format!("{path}: too few items"));
        }
        if s.get("maxItems")
            .and_then(Value::as_u64)
            .is_some_and(|m| (arr.len() as u64) > m)
        {
            errs.push(format!("{path}: too many items"));
        }
        if let Some(c) = s.get("contains")
            && !arr.iter().any(|x| passes(root, c, x, depth))
        {
            errs.push(format!("{path}: no item matches contains"));
        }
    }
    for sub in s
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        check(root, sub, v, path, errs, depth + 1);
    }
    if let Some(any) = s.get("anyOf").and_then(Value::as_array)
        && !any.iter().any(|x| passes(root, x, v, depth))
    {
        errs.push(format!("{path}: matches no anyOf branch"));
    }
    if let Some(one) = s.get("oneOf").and_then(Value::as_array) {
        let n = one.iter().filter(|x| passes(root, x, v, depth)).count();
        if n != 1 {
            errs.push(format!("{path}: matches {n} oneOf branches, expected 1"));
        }
    }
    if let Some(not) = s.get("not")
        && passes(root, not, v, depth)
    {
        errs.push(format!("{path}: matches a `not` schema"));
    }
    if let (Some(cond), Some(then)) = (s.get("if"), s.get("then"))
        && passes(root, cond, v, depth)
    {
        check(root, then, v, path, errs, depth + 1);
    }
}

fn passes(root: &Value, s: &Value, v: &Value, depth: u32) -> bool {
    let mut e = Vec::new();
    check(root, s, v, "$", &mut e, depth + 1);
    e.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn catches_the_usual_violations() {
        let root =
            json!({"components": {"schemas": {"Id": {"type": "string", "pattern": "^d+$"}}}});
        let s = json!({"type": "object", "required": ["id", "n"], "additionalProperties": false,
            "properties": {"id": {"$ref": "#/components/schemas/Id"}, "n": {"type": "number", "nullable": true},
                           "k": {"oneOf": [{"type": "string"}, {"type": "number"}]}}});
        assert!(validate(&root, &s, &json!({"id": "123", "n": null})).is_empty());
        let errs = validate(&root, &s, &json!({"id": "12a", "extra": 1, "k": true}));
        assert_eq!(errs.len(), 4, "{errs:?}");
    }
}
