//! Topic selectors and matching. A selector is what a subscriber asks for (`topic=` query
//! parameters) and what a JWT grants (`mercure.publish` / `mercure.subscribe` claims):
//!
//! - `*` matches every topic;
//! - a selector containing `{` is a URI template (RFC 6570, levels 1 to 4): it matches a topic
//!   equal to its own text, or a topic that some expansion of the template could produce;
//! - anything else matches the topic equal to it.
//!
//! This mirrors the reference hub (dunglas/mercure `topic_selector.go`), which compares for
//! equality first and then matches the template's regular expression from
//! yosida95/uritemplate's `Regexp()`. Rust crates only expand templates, so templates are
//! compiled to an anchored regex here, one capture-free group per expression.
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
//!
//! # What is an error
//!
//! A selector longer than [`MAX_SELECTOR_LEN`] bytes is refused, so a query string cannot make
//! the hub compile huge regexes; so is a template with more than [`MAX_EXPRESSIONS`]
//! expressions or whose enforced `:N` prefixes add up to more than [`MAX_PREFIX_TOTAL`], and,
//! as a backstop, one whose regex exceeds a size limit.
//!
//! # What a selector costs
//!
//! Matching is linear in the topic's length (the `regex` crate's guarantee), and the limits
//! above bound the constant: measured on this machine (release), no template within them takes
//! more than about 20 µs to match a 1 KB topic, and its compiled form stays in the tens of KB
//! (the lazy DFA's cache is capped too). Templates are compiled once per distinct text and
//! shared ([`Template`] is interned): a thousand subscribers asking for the same template hold
//! one compiled copy, and the dispatcher evaluates it once per update (`dispatch.rs`). In a
//! template, an unclosed `{`, a `{` inside an expression, a `}` outside one, an empty
//! expression, a reserved operator (`= , ! @ |`), a bad variable name or prefix length are
//! errors, as RFC 6570's grammar says. The reference hub instead falls back to exact matching
//! for a selector that does not parse as a template; refusing it tells the client what to fix.
//! Characters that RFC 6570 does not allow in literals (space, `"`, `'`, `<`, `>`, `\`, `^`,
//! `` ` ``, `|`, a `%` not followed by two hex digits) are accepted and matched as themselves:
//! Mercure topics may be any string, and only braces are ambiguous. A `}` in a selector without
//! any `{` is an exact selector, as for the reference.

use regex_automata::meta::{self, Regex};
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// Longest selector accepted, in bytes.
pub const MAX_SELECTOR_LEN: usize = 4096;
/// Largest `:N` prefix enforced exactly; longer prefixes match values of any length.
pub const MAX_ENFORCED_PREFIX: u16 = 64;
/// Most expressions in one template. Each is a variable-length part that the matcher must try
/// at every split of the topic; more make matching slower and the compiled selector larger.
pub const MAX_EXPRESSIONS: usize = 16;
/// Most characters that the enforced `:N` prefixes of one template may add up to. A prefix is
/// compiled to N copies of a character class, and adjacent ones multiply the states a matcher
/// walks through: 13 expressions `{a:64}` took 3.3 MB and 22 ms per 1 KB topic (measured);
/// with this budget the worst template stays under about 0.1 ms per 1 KB topic.
pub const MAX_PREFIX_TOTAL: u32 = 64;
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
/// What a compiled template is charged against the budget besides its automata, for its lazy
/// DFA caches. They grow with the variety of topics matched, up to [`DFA_SIZE_LIMIT`] each;
/// topics come from publishers, who hold a token, so the typical use is charged (measured:
/// a `{id}` template's caches stay under 16 KB), not the most a hostile publisher could make.
const CACHE_CHARGE: usize = 16 << 10;

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

/// A selector that cannot be compiled, with what is wrong, where and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("topic selector is {len} bytes long, the limit is {MAX_SELECTOR_LEN} bytes")]
    TooLong { len: usize },
    #[error(
        "unclosed '{{' at byte {at} in topic selector {selector:?}: close each URI template \
         expression with '}}' before the end or the next '{{'"
    )]
    Unclosed { selector: String, at: usize },
    #[error(
        "'}}' without a matching '{{' at byte {at} in topic selector {selector:?}: a URI \
         template cannot contain a literal '}}', percent-encode it as %7D"
    )]
    StrayClose { selector: String, at: usize },
    #[error(
        "empty expression at byte {at} in topic selector {selector:?}: put a variable name \
         between the braces, e.g. {{id}}"
    )]
    EmptyExpression { selector: String, at: usize },
    #[error(
        "operator '{op}' at byte {at} in topic selector {selector:?} is reserved by RFC 6570: \
         use one of + # . / ; ? & or none"
    )]
    ReservedOperator {
        selector: String,
        op: char,
        at: usize,
    },
    #[error("invalid variable at byte {at} in topic selector {selector:?}: {problem}")]
    InvalidVariable {
        selector: String,
        at: usize,
        problem: String,
    },
    #[error(
        "invalid prefix length at byte {at} in topic selector {selector:?}: write ':' and a \
         number from 1 to 9999 after the variable name"
    )]
    InvalidPrefix { selector: String, at: usize },
    #[error(
        "topic selector {selector:?} is too complex to match: use fewer variables or \
         expressions"
    )]
    TooComplex { selector: String },
    #[error(
        "topic selector {selector:?} has {count} URI template expressions, the limit is \
         {MAX_EXPRESSIONS}: subscribe with several simpler selectors instead"
    )]
    TooManyExpressions { selector: String, count: usize },
    #[error(
        "the ':N' prefixes of topic selector {selector:?} add up to {total} characters, the \
         limit is {MAX_PREFIX_TOTAL} per selector: use shorter prefixes or none"
    )]
    PrefixBudget { selector: String, total: u32 },
    #[error(
        "the hub holds as many compiled URI templates as its memory budget allows \
         ({budget} bytes); retry later, or subscribe with exact topics"
    )]
    OverBudget { budget: usize },
}

/// A compiled URI template.
pub struct Template {
    source: Box<str>,
    regex: Regex,
    /// What it is charged against the process's template budget.
    charge: usize,
}

/// Every compiled template alive, by text, so that equal selectors share one compiled copy.
/// Entries of dropped templates are removed by the template's `Drop`.
static INTERNED: std::sync::LazyLock<Mutex<HashMap<Box<str>, Weak<Template>>>> =
    std::sync::LazyLock::new(Mutex::default);

impl Template {
    /// Compiles `source` as a URI template, whether or not it contains an expression, or
    /// shares the compiled copy of an equal template that is still alive.
    pub fn new(source: &str) -> Result<Arc<Template>, SelectorError> {
        check_len(source)?;
        if let Some(shared) = crate::lock(&INTERNED).get(source).and_then(Weak::upgrade) {
            return Ok(shared);
        }
        // Compiled without the lock held: compiling takes up to a millisecond, and other
        // requests must not queue behind it.
        let regex = compile(source)?;
        let charge = regex.memory_usage() + CACHE_CHARGE + 2 * source.len();
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
            source: source.into(),
            regex,
            charge,
        });
        let mut interned = crate::lock(&INTERNED);
        match interned.get(source).and_then(Weak::upgrade) {
            // Another request compiled it meanwhile: use that one, drop ours.
            Some(shared) => Ok(shared),
            None => {
                interned.insert(source.into(), Arc::downgrade(&compiled));
                Ok(compiled)
            }
        }
    }

    /// An identity of the compiled template, equal for every selector sharing it (for the
    /// dispatcher's per-update match cache).
    pub(crate) fn key(self: &Arc<Self>) -> usize {
        Arc::as_ptr(self) as usize
    }

    /// The template's text.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether some expansion of the template is `topic` (the regex matches all of it).
    pub fn is_match(&self, topic: &str) -> bool {
        self.regex.is_match(topic)
    }
}

impl Drop for Template {
    fn drop(&mut self) {
        TEMPLATE_BYTES.fetch_sub(self.charge, Ordering::AcqRel);
        let mut interned = crate::lock(&INTERNED);
        // The entry may already name a newer copy of the same text; remove only a dead one.
        if interned
            .get(&self.source)
            .is_some_and(|weak| weak.strong_count() == 0)
        {
            interned.remove(&self.source);
        }
    }
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Template")
            .field("source", &self.source)
            .field("charge", &self.charge)
            .finish()
    }
}

/// The regex is a function of the source, so the source alone decides equality.
impl PartialEq for Template {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Template {}

/// A compiled selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// `*`: every topic.
    Any,
    /// The topic equal to this text.
    Exact(String),
    /// A URI template (the selector contained `{`). Shared: equal templates are compiled once
    /// (see [`Template::new`]), and a pointer keeps every subscriber's selector set small.
    Template(Arc<Template>),
}

impl Selector {
    /// `*` is [`Selector::Any`], text containing `{` a [`Selector::Template`] (an error if it
    /// is not a valid one), anything else [`Selector::Exact`].
    pub fn parse(s: &str) -> Result<Selector, SelectorError> {
        check_len(s)?;
        if s == "*" {
            Ok(Selector::Any)
        } else if s.contains('{') {
            Template::new(s).map(Selector::Template)
        } else {
            Ok(Selector::Exact(s.to_owned()))
        }
    }

    /// Whether the selector selects `topic`. A template matches its own text too, like the
    /// reference hub, which compares for equality before trying the template.
    pub fn matches(&self, topic: &str) -> bool {
        match self {
            Selector::Any => true,
            Selector::Exact(exact) => exact == topic,
            Selector::Template(t) => &*t.source == topic || t.is_match(topic),
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

    /// The topic of an exact selector, so an index can key on it.
    pub fn exact(&self) -> Option<&str> {
        match self {
            Selector::Exact(exact) => Some(exact),
            _ => None,
        }
    }

    /// The template of a template selector.
    pub fn as_template(&self) -> Option<&Arc<Template>> {
        match self {
            Selector::Template(t) => Some(t),
            _ => None,
        }
    }
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Selector::parse(s)
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Selectors taken together (a subscription's topics, a token's claim): any may match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelectorSet {
    /// A boxed slice, not a `Vec`: exactly as long as needed (a collected `Vec` reserves room
    /// for four), since every subscription keeps two sets for its lifetime.
    selectors: Box<[Selector]>,
}

impl SelectorSet {
    /// Parses every item; the first invalid one is the error.
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

    /// Whether some selector matches `topic`.
    pub fn matches(&self, topic: &str) -> bool {
        self.selectors.iter().any(|s| s.matches(topic))
    }

    /// Whether some selector matches some of `topics` (an update's topics).
    pub fn matches_any<'a>(&self, topics: impl IntoIterator<Item = &'a str>) -> bool {
        topics.into_iter().any(|t| self.matches(t))
    }

    pub fn is_empty(&self) -> bool {
        self.selectors.is_empty()
    }

    pub fn len(&self) -> usize {
        self.selectors.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Selector> {
        self.selectors.iter()
    }
}

impl FromIterator<Selector> for SelectorSet {
    fn from_iter<I: IntoIterator<Item = Selector>>(iter: I) -> Self {
        SelectorSet {
            selectors: iter.into_iter().collect(),
        }
    }
}

fn check_len(s: &str) -> Result<(), SelectorError> {
    if s.len() > MAX_SELECTOR_LEN {
        return Err(SelectorError::TooLong { len: s.len() });
    }
    Ok(())
}

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
    use proptest::prelude::*;

    fn m(selector: &str, topic: &str) -> bool {
        Selector::parse(selector).unwrap().matches(topic)
    }

    fn err(selector: &str) -> SelectorError {
        Selector::parse(selector).unwrap_err()
    }

    #[test]
    fn exact_and_any() {
        assert!(m("https://example.com/a", "https://example.com/a"));
        assert!(!m("https://example.com/a", "https://example.com/ab"));
        assert!(!m("https://example.com/a", "https://example.com/"));
        assert!(m("*", "anything at all"));
        assert!(m("*", ""));
        assert_eq!(Selector::parse("*").unwrap(), Selector::Any);
        assert_eq!(Selector::parse("x").unwrap().exact(), Some("x"));
        assert_eq!(Selector::parse("*").unwrap().exact(), None);
        assert_eq!(Selector::parse("a/{b}").unwrap().exact(), None);
        for s in ["*", "x", "a/{b}"] {
            assert_eq!(Selector::parse(s).unwrap().as_str(), s);
            assert_eq!(s.parse::<Selector>().unwrap().to_string(), s);
        }
        // Without '{' a selector is not a template, even with '}' or regex syntax in it.
        assert_eq!(
            Selector::parse("a}b.*").unwrap(),
            Selector::Exact("a}b.*".into())
        );
        assert!(!m("a}b.*", "a}bcd"));
    }

    #[test]
    fn simple_expansion() {
        let t = "https://example.com/books/{id}";
        assert!(m(t, "https://example.com/books/1"));
        assert!(m(t, "https://example.com/books/abc"));
        assert!(m(t, "https://example.com/books/abc-def_1.2~x"));
        assert!(m(t, "https://example.com/books/caf%C3%A9"));
        assert!(m(t, "https://example.com/books/red,green"), "a list value");
        assert!(m(t, "https://example.com/books/"), "an undefined value");
        assert!(!m(t, "https://example.com/books/1/reviews"));
        assert!(!m(t, "https://example.com/authors/1"));
        assert!(!m(t, "https://example.com/books/a b"));
        assert!(
            !m(t, "https://example.com/books/café"),
            "expansion percent-encodes"
        );
        assert!(!m(t, "https://example.com/books/1?x"));
        assert!(
            !m(t, "xhttps://example.com/books/1"),
            "anchored at the start"
        );
        assert!(
            !m(t, "https://example.com/books/1\n"),
            "anchored at the end"
        );
        assert!(m("{a}-{b}", "x-y"));
        assert!(m("/{x,y}", "/1,2"));
        assert!(!m("/{x,y}", "/1,2/3"));
        assert!(m("/{list*}", "/a,b,c"));
        assert!(m("/{keys*}", "/a=1,b=2"));
        assert!(!m("/{keys}", "/a=1"), "'=' only comes from exploding");
    }

    #[test]
    fn template_matches_its_own_text() {
        let t = "https://example.com/books/{id}";
        let selector = Selector::parse(t).unwrap();
        assert!(!selector.as_template().unwrap().is_match(t));
        assert!(selector.matches(t));
        assert!(m("/{?q}", "/{?q}"));
    }

    #[test]
    fn literals_are_escaped() {
        let t = "https://example.com/a.b/{id}";
        assert!(m(t, "https://example.com/a.b/1"));
        assert!(!m(t, "https://example.com/aXb/1"));
        assert!(m("https://x/(a)+|^$[z]/{id}", "https://x/(a)+|^$[z]/7"));
        assert!(!m("https://x/(a)+/{id}", "https://x/aa/7"));
        assert!(m("/a b\\c/{id}", "/a b\\c/1"), "non-RFC literal characters");
        assert!(m("/caf%C3%A9/{id}", "/caf%C3%A9/1"));
        assert!(!m("/caf%C3%A9/{id}", "/café/1"));
    }

    #[test]
    fn reserved_expansion() {
        assert!(m("{+path}/here", "/foo/bar/here"));
        assert!(m("{+path}/here", "/here"));
        assert!(m("{+base}{id}", "https://a.example/x?y=1&z#w1"));
        assert!(
            !m("{path}/here", "/foo/bar/here"),
            "simple expansion encodes '/'"
        );
        assert!(!m("{+path}/here", "/foo bar/here"));
        assert!(m("X{#frag}", "X#a/b,c"));
        assert!(m("X{#frag}", "X#"));
        assert!(m("X{#frag}", "X"));
        assert!(!m("X{#frag}", "Xa/b"), "'#' comes first");
        assert!(!m("X{#frag}", "X#a b"));
    }

    #[test]
    fn label_and_path_expansion() {
        let t = "/foo/{bar}/baz{.ext}";
        assert!(m(t, "/foo/x/baz.json"));
        assert!(m(t, "/foo/x/baz"));
        assert!(!m(t, "/foo/x/baz/json"));
        assert!(!m(t, "/foo/x/bazjson"));
        assert!(m("/file{.ext,v}", "/file.tar.gz"));
        assert!(m("X{.list*}", "X.a.b.c"));
        assert!(m("{/path*}", "/a/b/c"));
        assert!(m("{/path*}", ""));
        assert!(m("{/path*}", "/k=v/l=w"), "exploded associative array");
        assert!(
            !m("{/path}", "/a/b"),
            "an unexploded path value encodes '/'"
        );
        assert!(m("{/a,b}", "/x/y"));
        assert!(!m("{/a,b}", "/x/y/z"), "two variables, two segments");
        assert!(!m("{/path*}", "a/b"));
    }

    #[test]
    fn named_expansion() {
        assert!(m("/p{;x,y}", "/p;x=1;y"));
        assert!(m("/p{;x,y}", "/p;y=2"));
        assert!(m("/p{;x,y}", "/p"));
        assert!(!m("/p{;x,y}", "/p;z=1"));
        assert!(!m("/p{;x,y}", "/p;x=1;y=2;x=3"));
        assert!(m("/p{;list*}", "/p;list=a;list=b"));
        assert!(m("/p{;keys*}", "/p;a=1;b"));
        let t = "/s{?q,lang}";
        assert!(m(t, "/s?q=cat&lang=en"));
        assert!(m(t, "/s?lang=en&q=cat"), "order is not checked");
        assert!(m(t, "/s?lang=en"));
        assert!(m(t, "/s?q="));
        assert!(m(t, "/s"));
        assert!(!m(t, "/s?"));
        assert!(!m(t, "/s?q"), "'?' writes 'q=' for an empty value");
        assert!(!m(t, "/s?other=1"));
        assert!(!m(t, "/s?q=cat&lang=en&x=1"));
        assert!(!m(t, "/s&q=cat"));
        assert!(!m(t, "/s?q=a=b"));
        assert!(m("/s{?keys*}", "/s?a=1&b=2"));
        assert!(m("/s{?list*}", "/s?list=a&list=b"));
        assert!(!m("/s{?keys*}", "/s?a"));
        assert!(m("/s?fixed=1{&x}", "/s?fixed=1&x=2"));
        assert!(!m("/s?fixed=1{&x}", "/s?fixed=1?x=2"));
        assert!(m("/s{?a%20b,c.d}", "/s?a%20b=1&c.d=2"));
        assert!(!m("/s{?a%20b}", "/s?aX20b=1"), "names are escaped");
    }

    #[test]
    fn prefix() {
        assert!(m("/p/{var:3}", "/p/val"));
        assert!(m("/p/{var:3}", "/p/va"));
        assert!(m("/p/{var:3}", "/p/"));
        assert!(!m("/p/{var:3}", "/p/value"));
        assert!(m("/p/{var:3}", "/p/%E2%82%ACab"), "one encoded character");
        assert!(m("/p/{var:1}", "/p/%F0%9F%98%80"));
        assert!(!m("/p/{var:1}", "/p/%41%42"));
        assert!(m("/p{?q:2}", "/p?q=ab"));
        assert!(!m("/p{?q:2}", "/p?q=abc"));
        assert!(m("{+path:6}/here", "/foo/b/here"));
        assert!(!m("{+path:6}/here", "/foo/ba/here"));
        assert!(
            m("/p/{var:9999}", &format!("/p/{}", "x".repeat(20_000))),
            "long prefixes are not enforced"
        );
    }

    #[test]
    fn malformed_templates() {
        assert!(matches!(err("{"), SelectorError::Unclosed { at: 0, .. }));
        assert!(matches!(
            err("https://a/{id"),
            SelectorError::Unclosed { at: 10, .. }
        ));
        assert!(matches!(
            err("/{a{b}}"),
            SelectorError::Unclosed { at: 1, .. }
        ));
        assert!(matches!(
            err("{}"),
            SelectorError::EmptyExpression { at: 0, .. }
        ));
        assert!(matches!(
            err("/{?}"),
            SelectorError::EmptyExpression { at: 1, .. }
        ));
        for op in ['=', ',', '!', '@', '|'] {
            let selector = format!("/{{{op}x}}");
            assert_eq!(
                err(&selector),
                SelectorError::ReservedOperator {
                    selector: selector.clone(),
                    op,
                    at: 2
                }
            );
        }
        assert!(matches!(
            err("a}{b}"),
            SelectorError::StrayClose { at: 1, .. }
        ));
        assert!(matches!(
            err("{b}}"),
            SelectorError::StrayClose { at: 3, .. }
        ));
        let invalid = |s: &str| match err(s) {
            SelectorError::InvalidVariable { at, .. } => at,
            other => panic!("{s}: {other}"),
        };
        assert_eq!(invalid("/{a b}"), 3);
        assert_eq!(invalid("/{x,}"), 4);
        assert_eq!(invalid("/{x,,y}"), 4);
        assert_eq!(invalid("/{?x,a-b}"), 6);
        assert_eq!(invalid("/{a..b}"), 4);
        assert_eq!(invalid("/{.a.}"), 4);
        assert_eq!(invalid("/{.a}{.b.}"), 8);
        assert_eq!(invalid("/{a%2}"), 3);
        assert_eq!(invalid("/{a**}"), 3);
        assert_eq!(invalid("/{a:3*}"), 3);
        assert_eq!(invalid("/{é}"), 2);
        let prefix = |s: &str| match err(s) {
            SelectorError::InvalidPrefix { at, .. } => at,
            other => panic!("{s}: {other}"),
        };
        assert_eq!(prefix("/{abc:0}"), 5);
        assert_eq!(prefix("/{abc:}"), 5);
        assert_eq!(prefix("/{abc:10000}"), 5);
        assert_eq!(prefix("/{abc:03}"), 5);
        assert_eq!(prefix("/{abc:+3}"), 5);
        assert_eq!(prefix("/{abc:x}"), 5);
        assert!(Selector::parse("/{abc:9999}").is_ok());
    }

    #[test]
    fn error_messages_say_what_and_where() {
        let message = err("https://a/{id").to_string();
        assert!(
            message.contains("unclosed '{' at byte 10")
                && message.contains("topic selector \"https://a/{id\""),
            "{message}"
        );
        let message = err("/{a-b}").to_string();
        assert!(
            message.contains("byte 3") && message.contains("'-' is not allowed"),
            "{message}"
        );
        let message = err("/{=x}").to_string();
        assert!(message.contains("operator '='"), "{message}");
        let message = err("a}{b}").to_string();
        assert!(message.contains("%7D"), "{message}");
        let message = err("/{}").to_string();
        assert!(message.contains("{id}"), "{message}");
    }

    #[test]
    fn limits() {
        let long = format!("/{}", "x".repeat(MAX_SELECTOR_LEN));
        assert_eq!(
            err(&long),
            SelectorError::TooLong {
                len: MAX_SELECTOR_LEN + 1
            }
        );
        assert!(err(&"{a}".repeat(2000)).to_string().contains("4096"));
        assert!(Selector::parse(&"x".repeat(MAX_SELECTOR_LEN)).is_ok());
        // Found from outside: 13 expressions `{a:64}` cost 3.3 MB and 22 ms per match.
        let heavy = format!("{}/1", "{a:64}".repeat(13));
        let message = err(&heavy).to_string();
        assert!(
            message.contains("add up to 832 characters, the limit is 64"),
            "{message}"
        );
        assert!(Selector::parse(&"{a:16}".repeat(4)).is_ok());
        assert!(matches!(
            err(&format!("{}{{b:1}}", "{a:16}".repeat(4))),
            SelectorError::PrefixBudget { total: 65, .. }
        ));
        // Prefixes above the enforced length cost nothing and count for nothing.
        assert!(Selector::parse(&"{a:65}".repeat(16)).is_ok());
        let many = "/{a}".repeat(MAX_EXPRESSIONS + 4);
        let message = err(&many).to_string();
        assert!(
            message.contains("has 20 URI template expressions, the limit is 16"),
            "{message}"
        );
        assert!(Selector::parse(&"/{a}".repeat(MAX_EXPRESSIONS)).is_ok());
        // Many variables in one expression stay cheap: they are not counted past a few.
        let names: Vec<String> = (0..500).map(|i| format!("v{i}")).collect();
        let query = format!("/s{{?{}}}", names.join(","));
        assert!(m(&query, "/s?v3=1&v499=2"));
        assert!(!m(&query, "/s?v3=1&v500=2"));
    }

    #[test]
    fn sets() {
        let set = SelectorSet::parse(["https://a/{id}", "https://b"]).unwrap();
        assert_eq!(set.len(), 2);
        assert!(set.matches("https://a/1") && set.matches("https://b"));
        assert!(!set.matches("https://c"));
        assert!(set.matches_any(["https://c", "https://b"]));
        assert!(!set.matches_any(["https://c", "https://d"]));
        assert!(!set.matches_any([]));
        assert_eq!(
            set.iter().map(Selector::as_str).collect::<Vec<_>>(),
            ["https://a/{id}", "https://b"]
        );
        assert!(SelectorSet::default().is_empty());
        assert!(!SelectorSet::default().matches("x"));
        let owned = vec![String::from("*")];
        assert!(SelectorSet::parse(&owned).unwrap().matches("x"));
        assert!(matches!(
            SelectorSet::parse(["ok", "{bad"]),
            Err(SelectorError::Unclosed { .. })
        ));
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
            !crate::lock(&INTERNED).contains_key(source),
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
