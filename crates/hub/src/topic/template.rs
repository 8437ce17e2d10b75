//! URI templates (RFC 6570, levels 1 to 4) compiled to anchored regexes that match their
//! expansions, and Mercure 1.0's URL patterns (WHATWG URL Pattern, through the `urlpattern`
//! crate, whose components are `regex` crate regexes: linear-time matching); both interned so
//! that equal selectors share one compiled copy, and charged against the process's template
//! budget.
//!
//! # What a template matches
//!
//! Literals match themselves exactly (they are regex-escaped), as in the reference: not in the
//! percent-encoded form RFC expansion gives characters that URIs lack (`é`, a space), since
//! Mercure topics are IRIs, often with such characters raw. An expression matches what
//! expanding it could produce, given that any of its variables may be undefined (and then
//! omitted, with its separator) and that a value may be a string, a list or an associative
//! array:
//!
//! - values are matched in their expanded, percent-encoded form: unreserved characters
//!   (`A-Z a-z 0-9 - . _ ~`) and `%XX` triplets, plus the reserved characters
//!   (`:/?#[]@!$&'()*+,;=`) for `{+var}` and `{#var}`, plus `,` (a list or associative array
//!   expands to comma-separated items) and, for an exploded variable, `=` (`key=value` items).
//!   A raw non-ASCII character in a topic does not match a variable: expansion would have
//!   percent-encoded it (the reference behaves the same);
//! - `.` `/` `;` `?` `&` `#` prefix the expansion and `.` `/` `;` `&` separate its variables
//!   (and exploded items), as in the RFC 6570 table; `{x,y}` `{+x,y}` `{#x,y}` use `,`;
//! - `;` `?` `&` are named: each variable appears as `name=value` (`;name` when empty for `;`,
//!   `name=` for `?` and `&`), with the variable's own name;
//! - `{var:N}` matches at most N characters, counting a percent-encoded UTF-8 sequence as one.
//!
//! What is approximated, always by accepting more, never less, than expansion produces:
//!
//! - the variables of one expression may appear in any order, and a name more than once, as the
//!   reference's regex allows too; up to the number of variables if it is at most 4;
//! - an exploded variable in `;` `?` `&` matches any `key=value` items, since an associative
//!   array picks its own keys;
//! - `;x=` is accepted for an empty value (the RFC writes `;x`); for `:N`, any `%XX` followed by
//!   up to three continuation triplets counts as one character, valid UTF-8 or not; prefix
//!   lengths above [`MAX_ENFORCED_PREFIX`] are not enforced (the regex would grow with N).
//!
//! The reference's regex is looser still: it ignores variable names in `;` `?` `&` (so `{?q}`
//! matches `?anything=1` there, not here), ignores `:N`, and accepts `=` in any named value.

use super::{MAX_ENFORCED_PREFIX, MAX_EXPRESSIONS, MAX_PREFIX_TOTAL, SelectorError, check_len};
use regex_automata::meta::{self, Regex};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// Most variables in one expression whose number of appearances the regex bounds; beyond,
/// the bound (a counted repetition) would cost more than it is worth.
const MAX_COUNTED_VARS: usize = 4;
/// Size limit of one compiled template's automata; a backstop behind the limits above, which
/// keep every accepted template below it (the costliest measured about 90 KB).
const REGEX_SIZE_LIMIT: usize = 256 << 10;
/// Size of one compiled template's lazy DFA cache (one per thread that matches with it, and
/// per direction): a topic that makes the DFA thrash gets the slower, still linear, fallback
/// instead of more memory.
const DFA_SIZE_LIMIT: usize = 64 << 10;
/// What a compiled template is charged against the budget besides its automata, for the lazy
/// DFA caches of one thread. They grow with the variety of topics matched, up to
/// [`DFA_SIZE_LIMIT`] each; topics come from publishers, who hold a token, so the typical use
/// is charged (measured: a `{id}` template's caches stay under 16 KB), not the most a hostile
/// publisher could make.
const CACHE_CHARGE: usize = 16 << 10;

/// How many threads may each hold a cache of one template: the regex keeps one per thread that
/// matches with it at the same time, and templates are matched on the `herald-match` thread
/// (live updates) and on the runtime's workers (a subscriber catching up from history checks
/// each update it reads). The runtime has one worker per core.
fn cache_holders() -> usize {
    static HOLDERS: std::sync::LazyLock<usize> = std::sync::LazyLock::new(|| {
        1 + std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
    });
    *HOLDERS
}

/// Bytes charged by every compiled template alive in this process, and the most allowed.
static TEMPLATE_BYTES: AtomicUsize = AtomicUsize::new(0);
static TEMPLATE_BUDGET: AtomicUsize = AtomicUsize::new(DEFAULT_TEMPLATE_BUDGET);
/// The default of [`set_template_budget`].
pub const DEFAULT_TEMPLATE_BUDGET: usize = 256 << 20;

/// Sets the memory all distinct compiled templates of this process may take together (they
/// are shared by every hub of the process, so the budget is too). A subscription or token that
/// would compile a template beyond it is refused ([`SelectorError::OverBudget`]) until others
/// are gone: templates cost up to ~200 KB each, and a hostile client could otherwise make
/// the hub compile distinct ones without end.
pub fn set_template_budget(bytes: usize) {
    TEMPLATE_BUDGET.store(bytes, Ordering::Relaxed);
}

/// Bytes charged by the compiled templates alive now.
pub fn template_bytes() -> usize {
    TEMPLATE_BYTES.load(Ordering::Relaxed)
}

/// Unreserved characters, for a regex character class.
const UNRESERVED: &str = r"A-Za-z0-9\-._~";
/// Reserved characters, for a regex character class.
const RESERVED: &str = r":/?#\[\]@!$&'()*+,;=";
/// One percent-encoded octet.
const PCT: &str = "%[0-9A-Fa-f]{2}";
/// One percent-encoded character: an octet and up to three UTF-8 continuation octets.
const PCT_CHAR: &str = "%[0-9A-Fa-f]{2}(?:%[89ABab][0-9A-Fa-f]){0,3}";

/// A compiled URI template or URL pattern.
pub struct Template {
    /// Its text and kind, as interned: what decides its matcher, and so its equality.
    key: Key,
    matcher: Matcher,
    /// What it is charged against the process's template budget.
    charge: usize,
}

/// How a [`Template`] matches.
enum Matcher {
    /// A URI template (Mercure 0.x `topic=`): one anchored regex.
    UriTemplate(Regex),
    /// A URL pattern (Mercure 1.0 `match_urlpattern=`). Relative patterns and topics are
    /// resolved against `base`, the hub's URL.
    UrlPattern {
        pattern: Box<urlpattern::UrlPattern<TestOnly>>,
        base: url::Url,
    },
}

/// A URL pattern component's regex, only ever asked whether it matches. The crate's own
/// `RegExp` for `regex::Regex` extracts every group (`captures`), which runs the regex
/// crate's capture engines: linear in the topic, but times the number of groups, with a large
/// constant. The fuzzer found a pattern of 90 `*` wildcards taking 149 ms against a 4 KB topic
/// in its instrumented build (examples/url_pattern_cost.rs has it in a release build); the hub
/// matches every update against every distinct pattern, so it only tests (`is_match`, the
/// lazy DFA) and never reads a group.
#[derive(Debug)]
pub(crate) struct TestOnly(regex::Regex);

impl urlpattern::regexp::RegExp for TestOnly {
    fn syntax() -> urlpattern::RegexSyntax {
        urlpattern::RegexSyntax::Rust
    }

    fn parse(pattern: &str, _flags: &str, _force_eval: bool) -> Result<Self, ()> {
        regex::Regex::new(pattern).map(TestOnly).map_err(|_| ())
    }

    fn matches<'a>(&self, text: &'a str) -> Option<Vec<Option<&'a str>>> {
        // No groups: `test` only asks whether there was a match.
        self.0.is_match(text).then(Vec::new)
    }

    fn pattern_string(&self) -> &str {
        self.0.as_str()
    }
}

/// What a URL pattern is charged besides the regex caches: its eight components' compiled
/// regexes, which the crate does not measure (a typical pattern's are a few KB each).
const URL_PATTERN_CHARGE: usize = 64 << 10;

/// The interning key of a template: its kind and what decides its matcher.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    UriTemplate(Box<str>),
    /// The pattern and the base URL it resolves against.
    UrlPattern(Box<str>, Box<str>),
}

impl Key {
    /// The template's text.
    fn source(&self) -> &str {
        match self {
            Key::UriTemplate(source) | Key::UrlPattern(source, _) => source,
        }
    }
}

/// Every compiled template alive, by key, so that equal selectors share one compiled copy.
/// Entries of dropped templates are removed by the template's `Drop`.
static INTERNED: std::sync::LazyLock<Mutex<HashMap<Key, Weak<Template>>>> =
    std::sync::LazyLock::new(Mutex::default);

impl Template {
    /// Compiles `source` as a URI template, whether or not it contains an expression, or
    /// shares the compiled copy of an equal template that is still alive.
    pub fn new(source: &str) -> Result<Arc<Template>, SelectorError> {
        check_len(source)?;
        Template::intern(Key::UriTemplate(source.into()), || {
            let regex = compile(source)?;
            let charge = regex.memory_usage() + CACHE_CHARGE * cache_holders();
            Ok((Matcher::UriTemplate(regex), charge))
        })
    }

    /// Compiles `source` as a WHATWG URL pattern (Mercure 1.0), relative to `base` (the
    /// hub's URL), or shares the compiled copy of an equal one. Its regular expressions are
    /// the `regex` crate's (no backtracking): a pattern whose regexp groups need more (a
    /// lookahead, a backreference) is refused, not run slowly.
    pub fn url_pattern(source: &str, base: &url::Url) -> Result<Arc<Template>, SelectorError> {
        check_len(source)?;
        let key = Key::UrlPattern(source.into(), base.as_str().into());
        Template::intern(key, || {
            let invalid = |err: urlpattern::Error| SelectorError::UrlPattern {
                selector: source.to_owned(),
                reason: err.to_string(),
            };
            let init = urlpattern::UrlPatternInit::parse_constructor_string::<TestOnly>(
                source,
                Some(base.clone()),
            )
            .map_err(invalid)?;
            let pattern =
                urlpattern::UrlPattern::parse(init, Default::default()).map_err(invalid)?;
            let matcher = Matcher::UrlPattern {
                pattern: Box::new(pattern),
                base: base.clone(),
            };
            Ok((matcher, URL_PATTERN_CHARGE + CACHE_CHARGE * cache_holders()))
        })
    }

    /// The live copy under `key`, or one made by `compile` (charged what it says, and the
    /// source) if the budget allows.
    fn intern(
        key: Key,
        compile: impl FnOnce() -> Result<(Matcher, usize), SelectorError>,
    ) -> Result<Arc<Template>, SelectorError> {
        if let Some(shared) = crate::lock(&INTERNED).get(&key).and_then(Weak::upgrade) {
            return Ok(shared);
        }
        // Compiled without the lock held: compiling takes up to a millisecond, and other
        // requests must not queue behind it.
        let (matcher, charge) = compile()?;
        let charge = charge + 2 * key.source().len();
        let budget = TEMPLATE_BUDGET.load(Ordering::Relaxed);
        if TEMPLATE_BYTES
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used + charge <= budget).then_some(used + charge)
            })
            .is_err()
        {
            return Err(SelectorError::OverBudget { budget });
        }
        let compiled = Arc::new(Template {
            key,
            matcher,
            charge,
        });
        let mut interned = crate::lock(&INTERNED);
        match interned.get(&compiled.key).and_then(Weak::upgrade) {
            // Another request compiled it meanwhile: use that one, drop ours.
            Some(shared) => Ok(shared),
            None => {
                interned.insert(compiled.key.clone(), Arc::downgrade(&compiled));
                Ok(compiled)
            }
        }
    }

    /// An identity of the compiled template, equal for every selector sharing it (for the
    /// dispatcher's per-update match cache).
    pub(crate) fn identity(self: &Arc<Self>) -> usize {
        Arc::as_ptr(self) as usize
    }

    /// The template's text.
    pub fn as_str(&self) -> &str {
        self.key.source()
    }

    /// Whether it selects `topic`. A URI template: some expansion of it is `topic` (the regex
    /// matches all of it), or `topic` is its own text, as in the reference hub. A URL pattern:
    /// `topic`, resolved against the hub's URL, is a URL the pattern matches; a topic that is
    /// not a URL reference matches nothing.
    pub fn is_match(&self, topic: &str) -> bool {
        match &self.matcher {
            Matcher::UriTemplate(regex) => self.as_str() == topic || regex.is_match(topic),
            Matcher::UrlPattern { pattern, base } => url::Url::options()
                .base_url(Some(base))
                .parse(topic)
                .is_ok_and(|url| {
                    pattern
                        .test(urlpattern::UrlPatternMatchInput::Url(url))
                        .unwrap_or(false)
                }),
        }
    }
}

impl Drop for Template {
    fn drop(&mut self) {
        TEMPLATE_BYTES.fetch_sub(self.charge, Ordering::AcqRel);
        let mut interned = crate::lock(&INTERNED);
        // The entry may already name a newer copy of the same text; remove only a dead one.
        if interned
            .get(&self.key)
            .is_some_and(|weak| weak.strong_count() == 0)
        {
            interned.remove(&self.key);
        }
    }
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Template")
            .field("key", &self.key)
            .field("charge", &self.charge)
            .finish()
    }
}

/// The matcher is a function of the key, so the key alone decides equality.
impl PartialEq for Template {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for Template {}

/// Compiles a template to a regex matching its expansions, anchored at both ends.
fn compile(template: &str) -> Result<Regex, SelectorError> {
    let mut pattern = String::from("^");
    let mut pos = 0;
    let (mut expressions, mut prefix_total) = (0usize, 0u32);
    while let Some(i) = template[pos..].find(['{', '}']) {
        let at = pos + i;
        pattern.push_str(&regex_syntax::escape(&template[pos..at]));
        if template.as_bytes()[at] == b'}' {
            return Err(SelectorError::StrayClose {
                selector: template.to_owned(),
                at,
            });
        }
        // An expression ends at the first '}'; reaching a '{' or the end first leaves it open.
        let body_start = at + 1;
        let body_end = template[body_start..]
            .find(['{', '}'])
            .map(|j| body_start + j)
            .filter(|&end| template.as_bytes()[end] == b'}')
            .ok_or_else(|| SelectorError::Unclosed {
                selector: template.to_owned(),
                at,
            })?;
        let expression = Expression::parse(template, at, &template[body_start..body_end])?;
        expressions += 1;
        if expressions > MAX_EXPRESSIONS {
            let count = expressions + template[body_end..].matches('{').count();
            return Err(SelectorError::TooManyExpressions {
                selector: template.to_owned(),
                count,
            });
        }
        prefix_total += expression.enforced_prefix_total();
        expression.push_pattern(&mut pattern);
        pos = body_end + 1;
    }
    if prefix_total > MAX_PREFIX_TOTAL {
        return Err(SelectorError::PrefixBudget {
            selector: template.to_owned(),
            total: prefix_total,
        });
    }
    pattern.push_str(&regex_syntax::escape(&template[pos..]));
    pattern.push('$');
    Regex::builder()
        .configure(
            meta::Config::new()
                .nfa_size_limit(Some(REGEX_SIZE_LIMIT))
                .hybrid_cache_capacity(DFA_SIZE_LIMIT),
        )
        .build(&pattern)
        .map_err(|err| {
            // The pattern is built from escaped literals and fixed fragments: only its size can
            // be wrong.
            debug_assert!(
                err.size_limit().is_some(),
                "bug: template {template:?} compiled to invalid pattern {pattern:?}: {err}"
            );
            SelectorError::TooComplex {
                selector: template.to_owned(),
            }
        })
}

/// How an RFC 6570 operator expands (the table of its appendix A).
#[derive(Debug, Clone, Copy)]
struct Operator {
    /// Written before the first defined variable.
    first: &'static str,
    /// Written between variables, and between the items of an exploded one.
    sep: char,
    /// Whether variables are written `name=value`.
    named: bool,
    /// Whether an empty named value is written `name=` (`?`, `&`) rather than `name` (`;`).
    empty_equals: bool,
    /// Whether reserved characters pass unencoded (`+`, `#`).
    reserved: bool,
}

impl Operator {
    /// Simple string expansion, `{var}`.
    const SIMPLE: Operator = Operator::new("", ',', false, false);

    const fn new(first: &'static str, sep: char, named: bool, empty_equals: bool) -> Self {
        Operator {
            first,
            sep,
            named,
            empty_equals,
            reserved: false,
        }
    }

    /// The operator an expression starts with, if `c` is one.
    fn from_char(c: char) -> Option<Operator> {
        let reserved = Operator {
            reserved: true,
            ..Operator::SIMPLE
        };
        Some(match c {
            '+' => reserved,
            '#' => Operator {
                first: "#",
                ..reserved
            },
            '.' => Operator::new(".", '.', false, false),
            '/' => Operator::new("/", '/', false, false),
            ';' => Operator::new(";", ';', true, false),
            '?' => Operator::new("?", '&', true, true),
            '&' => Operator::new("&", '&', true, true),
            _ => return None,
        })
    }

    /// Zero or more value characters (expanded form), with `extra` characters allowed too.
    fn value(&self, extra: &str) -> String {
        // Reserved characters include ',' and '=' already.
        let (reserved, extra) = if self.reserved {
            (RESERVED, "")
        } else {
            ("", extra)
        };
        format!("(?:[{UNRESERVED}{reserved}{extra}]|{PCT})*")
    }

    /// At most `n` value characters, a percent-encoded UTF-8 sequence counting as one.
    fn prefix(&self, n: u16) -> String {
        let reserved = if self.reserved { RESERVED } else { "" };
        format!("(?:[{UNRESERVED}{reserved}]|{PCT_CHAR}){{0,{n}}}")
    }
}

/// A variable's modifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Modifier {
    None,
    /// `:N`
    Prefix(u16),
    /// `*`
    Explode,
}

/// A parsed `{...}` expression.
#[derive(Debug)]
struct Expression<'a> {
    op: Operator,
    vars: Vec<(&'a str, Modifier)>,
}

impl<'a> Expression<'a> {
    /// Parses the `body` of the expression whose `{` is at byte `open` of `template`.
    fn parse(template: &str, open: usize, body: &'a str) -> Result<Self, SelectorError> {
        let empty = || SelectorError::EmptyExpression {
            selector: template.to_owned(),
            at: open,
        };
        let (op, list) = match body.chars().next() {
            None => return Err(empty()),
            Some(c @ ('=' | ',' | '!' | '@' | '|')) => {
                return Err(SelectorError::ReservedOperator {
                    selector: template.to_owned(),
                    op: c,
                    at: open + 1,
                });
            }
            Some(c) => match Operator::from_char(c) {
                Some(_) if body.len() == 1 => return Err(empty()),
                Some(op) => (op, &body[1..]),
                None => (Operator::SIMPLE, body),
            },
        };
        let mut vars = Vec::new();
        // Operators are one ASCII byte.
        let mut at = open + 1 + (body.len() - list.len());
        for varspec in list.split(',') {
            vars.push(parse_varspec(template, at, varspec)?);
            at += varspec.len() + 1;
        }
        Ok(Expression { op, vars })
    }

    /// The characters the expression's enforced `:N` prefixes add up to.
    fn enforced_prefix_total(&self) -> u32 {
        self.vars
            .iter()
            .map(|&(_, modifier)| match modifier {
                Modifier::Prefix(n) if n <= MAX_ENFORCED_PREFIX => u32::from(n),
                _ => 0,
            })
            .sum()
    }

    /// Appends a capture-free group matching every expansion of the expression.
    fn push_pattern(&self, pattern: &mut String) {
        let op = self.op;
        // One alternative per distinct value pattern, with the names that take it: `{x,y}`
        // gives one alternative, `{?x,y}` one with `(?:x|y)=`. Repeated once per variable, the
        // alternatives would otherwise make the regex grow with the square of their number.
        let mut alternatives: Vec<(String, Vec<String>)> = Vec::new();
        for &(name, modifier) in &self.vars {
            let value = match modifier {
                Modifier::Prefix(n) if n <= MAX_ENFORCED_PREFIX => op.prefix(n),
                // Only strings take a prefix, so no ',' from lists.
                Modifier::Prefix(_) => op.value(""),
                // Lists and associative arrays expand to comma-separated items.
                Modifier::None => op.value(","),
                // Exploded items are separated by the operator's separator; an associative
                // array's are `key=value` (named operators write the '=' themselves).
                Modifier::Explode if op.named => op.value(""),
                Modifier::Explode => op.value("="),
            };
            let name = if !op.named {
                String::new()
            } else if modifier == Modifier::Explode {
                // Items are `name=value` for a list, `key=value` for an associative array: any
                // key, which covers the variable's name.
                op.value("")
            } else {
                regex_syntax::escape(name)
            };
            match alternatives.iter_mut().find(|(v, _)| *v == value) {
                Some((_, names)) if !names.contains(&name) => names.push(name),
                Some(_) => {}
                None => alternatives.push((value, vec![name])),
            }
        }
        let alternatives: Vec<String> = alternatives
            .into_iter()
            .map(|(value, names)| match (op.named, op.empty_equals) {
                (false, _) => value,
                (true, true) => format!("(?:{})={value}", names.join("|")),
                // `;` writes an empty value as the name alone.
                (true, false) => format!("(?:{})(?:={value})?", names.join("|")),
            })
            .collect();
        let var = format!("(?:{})", alternatives.join("|"));
        let first = regex_syntax::escape(op.first);
        let sep = regex_syntax::escape(op.sep.encode_utf8(&mut [0; 4]));
        let n = self.vars.len();
        let explode = self.vars.iter().any(|&(_, m)| m == Modifier::Explode);
        // Every variable may be undefined, and then the whole expression expands to nothing.
        let group = if explode || n > MAX_COUNTED_VARS {
            // Exploded items repeat the separator as often as there are items.
            format!("(?:{first}{var}(?:{sep}{var})*)?")
        } else if n > 1 {
            // Otherwise each variable appears at most once.
            format!("(?:{first}{var}(?:{sep}{var}){{0,{}}})?", n - 1)
        } else {
            format!("(?:{first}{var})?")
        };
        pattern.push_str(&group);
    }
}

/// Parses `varspec`, which starts at byte `at` of `template`.
fn parse_varspec<'a>(
    template: &str,
    at: usize,
    varspec: &'a str,
) -> Result<(&'a str, Modifier), SelectorError> {
    let (name, modifier) = if let Some(name) = varspec.strip_suffix('*') {
        (name, Modifier::Explode)
    } else if let Some((name, digits)) = varspec.split_once(':') {
        // `max-length = %x31-39 0*3DIGIT`: no sign, no leading zero.
        let n = digits
            .parse::<u16>()
            .ok()
            .filter(|n| (1..=9999).contains(n) && !digits.starts_with(['0', '+']))
            .ok_or_else(|| SelectorError::InvalidPrefix {
                selector: template.to_owned(),
                at: at + name.len(),
            })?;
        (name, Modifier::Prefix(n))
    } else {
        (varspec, Modifier::None)
    };
    check_varname(name).map_err(|(offset, problem)| SelectorError::InvalidVariable {
        selector: template.to_owned(),
        at: at + offset,
        problem,
    })?;
    Ok((name, modifier))
}

/// RFC 6570: `varname = varchar *( ["."] varchar )`, `varchar = ALPHA / DIGIT / "_" /
/// pct-encoded`. On error, the offending byte's offset and what to do about it.
fn check_varname(name: &str) -> Result<(), (usize, String)> {
    const USE: &str = "use letters, digits, '_', %XX, and '.' between them";
    if name.is_empty() {
        return Err((0, format!("missing variable name: {USE}")));
    }
    let bytes = name.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = |j: usize| bytes.get(j).is_some_and(u8::is_ascii_hexdigit);
                if !(hex(i + 1) && hex(i + 2)) {
                    return Err((i, format!("'%' must start a %XX triplet: {USE}")));
                }
                i += 3;
            }
            b'.' if i == 0 || i == bytes.len() - 1 || bytes[i - 1] == b'.' => {
                return Err((i, format!("'.' must be between name characters: {USE}")));
            }
            b if b.is_ascii_alphanumeric() || b == b'_' || b == b'.' => i += 1,
            _ => {
                let c = name[i..].chars().next().unwrap_or_default();
                return Err((i, format!("{c:?} is not allowed in a variable name: {USE}")));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::Selector;
    use proptest::prelude::*;

    fn m(selector: &str, topic: &str) -> bool {
        Selector::parse(selector).unwrap().matches(topic)
    }

    #[test]
    fn equal_templates_share_one_compiled_copy_while_alive() {
        let source = "https://interning.test/{id}/{+rest}";
        let a = Template::new(source).unwrap();
        let b = Template::new(source).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(
            &a,
            &Template::new("https://interning.test/{other}").unwrap()
        ));
        drop((a, b));
        assert!(
            !crate::lock(&INTERNED).contains_key(&Key::UriTemplate(source.into())),
            "a dropped template leaves the table"
        );
        assert!(
            Template::new(source)
                .unwrap()
                .is_match("https://interning.test/1/a/b")
        );
    }

    /// A variable's value, for the expander below.
    #[derive(Debug, Clone)]
    enum Value {
        Undefined,
        String(String),
        List(Vec<String>),
        Assoc(Vec<(String, String)>),
    }

    type Var = (String, Modifier, Value);

    const RESERVED_CHARS: &str = ":/?#[]@!$&'()*+,;=";

    /// RFC 6570 section 3.2.1: unreserved characters pass, and for `+` `#` reserved characters
    /// and percent-encoded triplets too; the rest is percent-encoded as UTF-8.
    fn encode(s: &str, reserved: bool) -> String {
        let mut out = String::new();
        let bytes = s.as_bytes();
        for (i, c) in s.char_indices() {
            let hex = |j: usize| bytes.get(j).is_some_and(u8::is_ascii_hexdigit);
            if c.is_ascii_alphanumeric()
                || "-._~".contains(c)
                || (reserved && RESERVED_CHARS.contains(c))
                || (reserved && c == '%' && hex(i + 1) && hex(i + 2))
            {
                out.push(c);
            } else {
                for b in c.encode_utf8(&mut [0; 4]).bytes() {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
        }
        out
    }

    /// RFC 6570 appendix A, for one expression: an independent expander to check the regex
    /// against.
    fn expand(op: Option<char>, vars: &[Var]) -> String {
        let o = op.map_or(Operator::SIMPLE, |c| Operator::from_char(c).unwrap());
        let ifemp = if o.empty_equals { "=" } else { "" };
        let sep = o.sep.to_string();
        let enc = |s: &str| encode(s, o.reserved);
        let mut parts = Vec::new();
        for (name, modifier, value) in vars {
            let explode = *modifier == Modifier::Explode;
            let part = match value {
                Value::Undefined => continue,
                Value::List(items) if items.is_empty() => continue,
                Value::Assoc(pairs) if pairs.is_empty() => continue,
                Value::String(s) => {
                    let s: String = match modifier {
                        Modifier::Prefix(n) => s.chars().take(usize::from(*n)).collect(),
                        _ => s.clone(),
                    };
                    match (o.named, s.is_empty()) {
                        (false, _) => enc(&s),
                        (true, true) => format!("{name}{ifemp}"),
                        (true, false) => format!("{name}={}", enc(&s)),
                    }
                }
                Value::List(items) if !explode => {
                    let items: Vec<String> = items.iter().map(|s| enc(s)).collect();
                    let joined = items.join(",");
                    if o.named {
                        format!("{name}={joined}")
                    } else {
                        joined
                    }
                }
                Value::Assoc(pairs) if !explode => {
                    let items: Vec<String> = pairs
                        .iter()
                        .map(|(k, v)| format!("{},{}", enc(k), enc(v)))
                        .collect();
                    let joined = items.join(",");
                    if o.named {
                        format!("{name}={joined}")
                    } else {
                        joined
                    }
                }
                Value::List(items) => {
                    let items: Vec<String> = items
                        .iter()
                        .map(|s| match (o.named, s.is_empty()) {
                            (false, _) => enc(s),
                            (true, true) => format!("{name}{ifemp}"),
                            (true, false) => format!("{name}={}", enc(s)),
                        })
                        .collect();
                    items.join(&sep)
                }
                Value::Assoc(pairs) => {
                    let items: Vec<String> = pairs
                        .iter()
                        .map(|(k, v)| match (o.named, v.is_empty()) {
                            (true, true) => format!("{}{ifemp}", enc(k)),
                            _ => format!("{}={}", enc(k), enc(v)),
                        })
                        .collect();
                    items.join(&sep)
                }
            };
            parts.push(part);
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!("{}{}", o.first, parts.join(&sep))
        }
    }

    #[test]
    fn expander_agrees_with_rfc_examples() {
        use Modifier::{Explode, None as Plain, Prefix};
        let s = |v: &str| Value::String(v.into());
        let list = Value::List(vec!["red".into(), "green".into(), "blue".into()]);
        let keys = Value::Assoc(vec![
            ("semi".into(), ";".into()),
            ("dot".into(), ".".into()),
            ("comma".into(), ",".into()),
        ]);
        let var = |n: &str, m: Modifier, v: &Value| (n.to_owned(), m, v.clone());
        let cases = [
            (None, vec![var("var", Prefix(3), &s("value"))], "val"),
            (None, vec![var("list", Plain, &list)], "red,green,blue"),
            (
                Some('+'),
                vec![var("path", Plain, &s("/foo/bar"))],
                "/foo/bar",
            ),
            (
                Some('#'),
                vec![var("keys", Explode, &keys)],
                "#semi=;,dot=.,comma=,",
            ),
            (
                Some('.'),
                vec![var("list", Explode, &list)],
                ".red.green.blue",
            ),
            (
                Some('/'),
                vec![var("keys", Plain, &keys)],
                "/semi,%3B,dot,.,comma,%2C",
            ),
            (
                Some(';'),
                vec![var("x", Plain, &s("1024")), var("y", Plain, &s(""))],
                ";x=1024;y",
            ),
            (
                Some('?'),
                vec![var("list", Explode, &list)],
                "?list=red&list=green&list=blue",
            ),
            (
                Some('&'),
                vec![var("keys", Explode, &keys)],
                "&semi=%3B&dot=.&comma=%2C",
            ),
            (
                Some('?'),
                vec![var("x", Plain, &s("")), var("u", Plain, &Value::Undefined)],
                "?x=",
            ),
            (None, vec![var("u", Plain, &Value::Undefined)], ""),
        ];
        for (op, vars, expected) in cases {
            assert_eq!(expand(op, &vars), expected);
        }
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof!["[a-z0-9]{0,4}", "[ -~é€😀]{0,5}"]
    }

    fn modifier_and_value() -> impl Strategy<Value = (Modifier, Value)> {
        let value = prop_oneof![
            Just(Value::Undefined),
            text().prop_map(Value::String),
            prop::collection::vec(text(), 0..4).prop_map(Value::List),
            prop::collection::vec((text(), text()), 0..4).prop_map(Value::Assoc),
        ];
        prop_oneof![
            value.clone().prop_map(|v| (Modifier::None, v)),
            value.prop_map(|v| (Modifier::Explode, v)),
            // Prefixes apply to strings only.
            (1..=12u16, prop::option::of(text())).prop_map(|(n, s)| (
                Modifier::Prefix(n),
                s.map_or(Value::Undefined, Value::String)
            )),
        ]
    }

    fn expression() -> impl Strategy<Value = (Option<char>, Vec<Var>)> {
        (
            prop::option::of(prop::sample::select(vec![
                '+', '#', '.', '/', ';', '?', '&',
            ])),
            prop::collection::vec(
                ("[a-z][a-z0-9_]{0,2}(\\.[a-z])?", modifier_and_value())
                    .prop_map(|(name, (m, v))| (name, m, v)),
                1..4,
            ),
        )
    }

    fn expression_text(op: Option<char>, vars: &[Var]) -> String {
        let specs: Vec<String> = vars
            .iter()
            .map(|(name, modifier, _)| match modifier {
                Modifier::None => name.clone(),
                Modifier::Explode => format!("{name}*"),
                Modifier::Prefix(n) => format!("{name}:{n}"),
            })
            .collect();
        let op = op.map(String::from).unwrap_or_default();
        format!("{{{op}{}}}", specs.join(","))
    }

    proptest! {
        #[test]
        fn expansions_of_simple_templates_match(
            parts in prop::collection::vec(
                ("[a-z:/.?=&#-]{0,6}", "[A-Za-z0-9._~-]{0,8}"),
                1..5,
            ),
            tail in "[a-z/.]{0,4}",
        ) {
            let mut template = String::new();
            let mut topic = String::new();
            for (i, (literal, value)) in parts.iter().enumerate() {
                template.push_str(&format!("{literal}{{v{i}}}"));
                topic.push_str(&format!("{literal}{value}"));
            }
            template.push_str(&tail);
            topic.push_str(&tail);
            prop_assert!(m(&template, &topic), "{} should match {}", template, topic);
        }

        #[test]
        fn expansions_of_any_expression_match(
            expressions in prop::collection::vec(("[a-z/:.]{0,3}", expression()), 1..4),
        ) {
            let mut template = String::new();
            let mut topic = String::new();
            for (literal, (op, vars)) in &expressions {
                template.push_str(literal);
                template.push_str(&expression_text(*op, vars));
                topic.push_str(literal);
                topic.push_str(&expand(*op, vars));
            }
            prop_assert!(m(&template, &topic), "{} should match {}", template, topic);
        }

        #[test]
        fn simple_variables_do_not_match_a_slash(value in "[a-z]{0,3}/[a-z/]{0,3}") {
            let topic = format!("https://example.com/books/{value}");
            let template = "https://example.com/books/{id}";
            prop_assert!(!m(template, &topic), "{} should not match {}", template, topic);
        }

        #[test]
        fn parsing_never_panics(s in "[{}a-z,:*+#./;?&=!@|%0-9 ]{0,12}") {
            if let Ok(selector) = Selector::parse(&s) {
                prop_assert_eq!(selector.as_str(), s.as_str());
                prop_assert!(selector.matches(&s));
            }
        }
    }
}
