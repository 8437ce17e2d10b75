//! Topic selectors and matching. A selector is what a subscriber asks for (`topic=` query
//! parameters) and what a JWT grants (`mercure.publish` / `mercure.subscribe`):
//!
//! - `*` matches every topic;
//! - a selector containing `{` is a URI template (RFC 6570, up to level 4): it matches a topic
//!   equal to its own text, or one that some expansion of the template could produce;
//! - anything else matches the topic equal to it.
//!
//! This mirrors the reference hub, which compares for equality first and then matches the
//! template's regular expression (yosida95/uritemplate's `Regexp`). There is no Rust crate for
//! matching (only for expanding), so templates are compiled to a regex here:
//!
//! - each expression matches zero or more of its variables, each as the operator's prefix and
//!   separators dictate (`.` `/` `;` `?` `&` `#`, `name=value` for the named ones);
//! - a value is unreserved characters and percent-encodings (plus reserved characters for `+`
//!   and `#`, and `,` since a list value expands to comma-separated items); a `:N` prefix limits
//!   the value to N of them;
//! - approximation: variables of one expression may match in any order, and an exploded
//!   associative array matches any `key=value` pairs. Both only ever widen a match to topics
//!   that a differently valued expansion would produce, which is what a selector means.

use regex::{Regex, RegexBuilder};
use std::fmt;

/// Longest selector accepted: a hostile query must not make the hub compile huge regexes.
pub const MAX_SELECTOR_LEN: usize = 4096;
const REGEX_SIZE_LIMIT: usize = 1 << 20;

const UNRESERVED: &str = r"[A-Za-z0-9\-._~]|%[0-9A-Fa-f]{2}";
const RESERVED: &str = r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2}";

/// A selector that cannot be compiled, with what is wrong and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("topic selector longer than {MAX_SELECTOR_LEN} bytes")]
    TooLong,
    #[error("unclosed '{{' at byte {at} in URI template {template:?}")]
    Unclosed { template: String, at: usize },
    #[error("'}}' without '{{' at byte {at} in URI template {template:?}")]
    StrayClose { template: String, at: usize },
    #[error("empty expression '{{}}' at byte {at} in URI template {template:?}")]
    EmptyExpression { template: String, at: usize },
    #[error("operator {op:?} at byte {at} is reserved by RFC 6570 in URI template {template:?}")]
    ReservedOperator {
        template: String,
        op: char,
        at: usize,
    },
    #[error(
        "invalid variable {var:?} at byte {at} in URI template {template:?}: use letters, digits, '_', '.', %XX"
    )]
    InvalidVariable {
        template: String,
        var: String,
        at: usize,
    },
    #[error("URI template {template:?} is too complex to match")]
    TooComplex { template: String },
}

/// A compiled URI template.
#[derive(Clone)]
pub struct Template {
    source: String,
    regex: Regex,
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Template").field(&self.source).finish()
    }
}

/// A compiled selector.
#[derive(Debug, Clone)]
pub enum Selector {
    Any,
    Exact(String),
    Template(Template),
}

impl Selector {
    pub fn parse(s: &str) -> Result<Selector, SelectorError> {
        if s.len() > MAX_SELECTOR_LEN {
            return Err(SelectorError::TooLong);
        }
        if s == "*" {
            Ok(Selector::Any)
        } else if s.contains('{') {
            Ok(Selector::Template(Template {
                source: s.to_owned(),
                regex: compile(s)?,
            }))
        } else {
            Ok(Selector::Exact(s.to_owned()))
        }
    }

    pub fn matches(&self, topic: &str) -> bool {
        match self {
            Selector::Any => true,
            Selector::Exact(exact) => exact == topic,
            Selector::Template(t) => t.source == topic || t.regex.is_match(topic),
        }
    }

    /// The selector's text.
    pub fn as_str(&self) -> &str {
        match self {
            Selector::Any => "*",
            Selector::Exact(exact) => exact,
            Selector::Template(t) => &t.source,
        }
    }

    /// The topic, for an exact selector (so an index can key on it).
    pub fn exact(&self) -> Option<&str> {
        match self {
            Selector::Exact(exact) => Some(exact),
            _ => None,
        }
    }
}

/// Selectors taken together (a subscription's topics, a token's grants): any may match.
#[derive(Debug, Clone, Default)]
pub struct SelectorSet {
    selectors: Vec<Selector>,
}

impl SelectorSet {
    pub fn parse<I, S>(items: I) -> Result<SelectorSet, SelectorError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let selectors = items
            .into_iter()
            .map(|s| Selector::parse(s.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(SelectorSet { selectors })
    }

    pub fn matches(&self, topic: &str) -> bool {
        self.selectors.iter().any(|s| s.matches(topic))
    }

    pub fn matches_any<'a>(&self, topics: impl IntoIterator<Item = &'a str>) -> bool {
        topics.into_iter().any(|t| self.matches(t))
    }

    pub fn is_empty(&self) -> bool {
        self.selectors.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Selector> {
        self.selectors.iter()
    }
}

/// How an RFC 6570 operator expands: prefix, separator, whether values are named, what a
/// named empty value looks like, and which characters values may hold.
struct Operator {
    first: &'static str,
    sep: &'static str,
    named: bool,
    /// Named operators whose empty value is written `name=` (`?`, `&`) rather than `name` (`;`).
    empty_needs_equals: bool,
    chars: &'static str,
}

fn operator(op: Option<char>) -> Operator {
    let (first, sep, named, empty_needs_equals, chars) = match op {
        None => ("", ",", false, false, UNRESERVED),
        Some('+') => ("", ",", false, false, RESERVED),
        Some('#') => ("#", ",", false, false, RESERVED),
        Some('.') => (".", ".", false, false, UNRESERVED),
        Some('/') => ("/", "/", false, false, UNRESERVED),
        Some(';') => (";", ";", true, false, UNRESERVED),
        Some('?') => ("?", "&", true, true, UNRESERVED),
        Some('&') => ("&", "&", true, true, UNRESERVED),
        Some(other) => unreachable!("operator {other:?} is filtered by the parser"),
    };
    Operator {
        first,
        sep,
        named,
        empty_needs_equals,
        chars,
    }
}

fn compile(template: &str) -> Result<Regex, SelectorError> {
    let mut pattern = String::from("^");
    let mut rest = template;
    let mut offset = 0;
    while !rest.is_empty() {
        let open = rest.find('{');
        let close = rest.find('}');
        if let Some(close) = close
            && open.is_none_or(|open| close < open)
        {
            return Err(SelectorError::StrayClose {
                template: template.to_owned(),
                at: offset + close,
            });
        }
        let Some(open) = open else {
            pattern.push_str(&regex::escape(rest));
            break;
        };
        pattern.push_str(&regex::escape(&rest[..open]));
        let Some(len) = rest[open + 1..].find('}') else {
            return Err(SelectorError::Unclosed {
                template: template.to_owned(),
                at: offset + open,
            });
        };
        let expression = &rest[open + 1..open + 1 + len];
        pattern.push_str(&expression_pattern(template, expression, offset + open)?);
        let consumed = open + len + 2;
        rest = &rest[consumed..];
        offset += consumed;
    }
    pattern.push('$');
    RegexBuilder::new(&pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|_| SelectorError::TooComplex {
            template: template.to_owned(),
        })
}

fn expression_pattern(
    template: &str,
    expression: &str,
    at: usize,
) -> Result<String, SelectorError> {
    let mut chars = expression.chars();
    let op = match chars.next() {
        None => {
            return Err(SelectorError::EmptyExpression {
                template: template.to_owned(),
                at,
            });
        }
        Some(c @ ('+' | '#' | '.' | '/' | ';' | '?' | '&')) => Some(c),
        Some(c @ ('=' | ',' | '!' | '@' | '|')) => {
            return Err(SelectorError::ReservedOperator {
                template: template.to_owned(),
                op: c,
                at,
            });
        }
        Some(_) => None,
    };
    let list = if op.is_some() {
        chars.as_str()
    } else {
        expression
    };
    let op = operator(op);
    let mut alternatives = Vec::new();
    let mut any_explode = false;
    for varspec in list.split(',') {
        let invalid = || SelectorError::InvalidVariable {
            template: template.to_owned(),
            var: varspec.to_owned(),
            at,
        };
        let (name, explode, prefix) = if let Some(name) = varspec.strip_suffix('*') {
            any_explode = true;
            (name, true, None)
        } else if let Some((name, n)) = varspec.split_once(':') {
            let n: u16 = n.parse().map_err(|_| invalid())?;
            if !(1..=9999).contains(&n) {
                return Err(invalid());
            }
            (name, false, Some(n))
        } else {
            (varspec, false, None)
        };
        if !valid_varname(name) {
            return Err(invalid());
        }
        let value = match prefix {
            Some(n) => format!("(?:{}){{0,{n}}}", op.chars),
            None => format!("(?:{}|,)*", op.chars),
        };
        let alternative = if !op.named {
            value
        } else {
            // An exploded associative array names each pair by its key, not the variable.
            let name = if explode {
                format!("(?:{UNRESERVED})+")
            } else {
                regex::escape(name)
            };
            if op.empty_needs_equals {
                format!("{name}={value}")
            } else {
                format!("{name}(?:={value})?")
            }
        };
        alternatives.push(alternative);
    }
    let var = format!("(?:{})", alternatives.join("|"));
    let (first, sep) = (regex::escape(op.first), regex::escape(op.sep));
    // Without explode each variable appears at most once; with it, a list repeats the separator.
    let more = if any_explode {
        "*".to_owned()
    } else {
        format!("{{0,{}}}", alternatives.len() - 1)
    };
    Ok(format!("(?:{first}{var}(?:{sep}{var}){more})?"))
}

fn valid_varname(name: &str) -> bool {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes[0] == b'.' || bytes[bytes.len() - 1] == b'.' {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = |j: usize| bytes.get(j).is_some_and(u8::is_ascii_hexdigit);
                if !(hex(i + 1) && hex(i + 2)) {
                    return false;
                }
                i += 3;
            }
            b'.' if bytes[i - 1] == b'.' => return false,
            b if b.is_ascii_alphanumeric() || b == b'_' || b == b'.' => i += 1,
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(selector: &str, topic: &str) -> bool {
        Selector::parse(selector).unwrap().matches(topic)
    }

    #[test]
    fn exact_and_star() {
        assert!(m("https://example.com/a", "https://example.com/a"));
        assert!(!m("https://example.com/a", "https://example.com/ab"));
        assert!(m("*", "anything at all"));
        assert_eq!(Selector::parse("x").unwrap().exact(), Some("x"));
        assert_eq!(Selector::parse("*").unwrap().exact(), None);
    }

    #[test]
    fn simple_template() {
        let t = "https://example.com/books/{id}";
        assert!(m(t, "https://example.com/books/1"));
        assert!(m(t, "https://example.com/books/abc-def_1.2~x"));
        assert!(m(t, "https://example.com/books/caf%C3%A9"));
        assert!(m(t, t), "a template matches its own text");
        assert!(!m(t, "https://example.com/books/1/reviews"));
        assert!(!m(t, "https://example.com/authors/1"));
        assert!(!m(t, "https://example.com/books/a b"));
        assert!(!m(t, "xhttps://example.com/books/1"), "anchored");
    }

    #[test]
    fn literals_are_escaped() {
        let t = "https://example.com/a.b/{id}";
        assert!(m(t, "https://example.com/a.b/1"));
        assert!(!m(t, "https://example.com/aXb/1"));
        assert!(m("https://x/(a)+/{id}", "https://x/(a)+/7"));
    }

    #[test]
    fn operators() {
        assert!(m("{+path}/here", "/foo/bar/here"));
        assert!(
            !m("{path}/here", "/foo/bar/here"),
            "simple expansion has no '/'"
        );
        assert!(m("X{#frag}", "X#a/b,c"));
        assert!(m("X{.ext}", "X.json"));
        assert!(m("/file{.ext,v}", "/file.tar.gz"));
        assert!(m("/foo/{bar}/baz{.ext}", "/foo/x/baz.json"));
        assert!(m("/foo/{bar}/baz{.ext}", "/foo/x/baz"));
        assert!(m("{/path*}", "/a/b/c"));
        assert!(!m("{/path}", "/a/b"), "unexploded path segment has no '/'");
        assert!(m("/p{;x,y}", "/p;x=1;y"));
        assert!(m("/s{?q,lang}", "/s?q=cat&lang=en"));
        assert!(m("/s{?q,lang}", "/s?lang=en"));
        assert!(m("/s{?q,lang}", "/s"));
        assert!(!m("/s{?q,lang}", "/s?other=1"));
        assert!(m("/s{?keys*}", "/s?a=1&b=2"));
        assert!(m("/s?fixed=1{&x}", "/s?fixed=1&x=2"));
        assert!(m("/l/{list}", "/l/red,green"));
        assert!(m("/p/{var:3}", "/p/val"));
        assert!(!m("/p/{var:3}", "/p/value"));
    }

    #[test]
    fn malformed_templates() {
        let err = |s: &str| Selector::parse(s).unwrap_err();
        assert!(matches!(
            err("https://a/{id"),
            SelectorError::Unclosed { at: 10, .. }
        ));
        assert!(matches!(
            err("https://a/{}"),
            SelectorError::EmptyExpression { .. }
        ));
        assert!(matches!(
            err("{=x}"),
            SelectorError::ReservedOperator { op: '=', .. }
        ));
        assert!(matches!(
            err("a}{b}"),
            SelectorError::StrayClose { at: 1, .. }
        ));
        assert!(matches!(
            err("{a b}"),
            SelectorError::InvalidVariable { .. }
        ));
        assert!(matches!(
            err("{a:0}"),
            SelectorError::InvalidVariable { .. }
        ));
        assert!(matches!(
            err("{a..b}"),
            SelectorError::InvalidVariable { .. }
        ));
        assert!(matches!(err(&"{a}".repeat(2000)), SelectorError::TooLong));
        let message = err("https://a/{id").to_string();
        assert!(
            message.contains("unclosed") && message.contains("byte 10"),
            "{message}"
        );
    }

    #[test]
    fn set_matches_any() {
        let set = SelectorSet::parse(["https://a/{id}", "https://b"]).unwrap();
        assert!(set.matches("https://a/1") && set.matches("https://b"));
        assert!(!set.matches("https://c"));
        assert!(set.matches_any(["https://c", "https://b"]));
        assert!(SelectorSet::default().is_empty());
        assert!(!SelectorSet::default().matches("x"));
    }

    proptest! {
        #[test]
        fn expansions_match_their_template(
            parts in prop::collection::vec(("[a-z:/.]{0,6}", "[A-Za-z0-9._~-]{0,8}"), 1..4),
        ) {
            let template: String = parts.iter().enumerate().map(|(i, (lit, _))| format!("{lit}{{v{i}}}")).collect();
            let topic: String = parts.iter().map(|(lit, value)| format!("{lit}{value}")).collect();
            prop_assert!(m(&template, &topic), "{} should match {}", template, topic);
        }
    }
}
