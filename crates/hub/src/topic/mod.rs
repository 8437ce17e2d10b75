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
//! The template compiler (RFC 6570 to an anchored regex), its interning and memory budget are
//! in `template.rs`; this module is the selector API and matching.
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
//! one compiled copy, and the dispatcher evaluates it once per update (`dispatch.rs`). A
//! selector with a `{` that RFC 6570's grammar does not accept as a template (an unclosed `{`,
//! a `{` inside an expression, a `}` outside one, an empty expression, a reserved operator
//! `= , ! @ |`, a bad variable name or prefix length) is an exact selector: the spec says a
//! selector can be any string, and the reference hub falls back to equality the same way
//! ([`SelectorError::is_syntax`]; the template compiler still reports where it failed).
//! Characters that RFC 6570 does not allow in literals (space, `"`, `'`, `<`, `>`, `\`, `^`,
//! `` ` ``, `|`, a `%` not followed by two hex digits) are accepted and matched as themselves:
//! Mercure topics may be any string, and only braces are ambiguous. A `}` in a selector without
//! any `{` is an exact selector, as for the reference.

mod template;

pub use template::{DEFAULT_TEMPLATE_BUDGET, Template, set_template_budget, template_bytes};

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

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

/// A selector that cannot be compiled, with what is wrong, where and how to fix it. The fields
/// (the selector, the byte where the problem is, the numbers involved) are what the message
/// shows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[allow(missing_docs)] // the fields: see above
pub enum SelectorError {
    /// Longer than [`MAX_SELECTOR_LEN`].
    /// A `{` without its `}`.
    /// A `}` outside an expression.
    /// `{}`.
    /// An operator RFC 6570 reserves (`= , ! @ |`).
    /// A variable name RFC 6570 does not allow.
    /// A `:N` that is not a number from 1 to 9999.
    /// Its compiled form would pass the size limit.
    /// More than [`MAX_EXPRESSIONS`] expressions.
    /// Its enforced `:N` prefixes add up to more than [`MAX_PREFIX_TOTAL`].
    /// Compiling it would pass the process's template budget (`503`).
    /// A `match_urlpattern` value that is not a URL pattern (or needs a backtracking regex).
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
    #[error("invalid URL pattern {selector:?}: {reason}")]
    UrlPattern { selector: String, reason: String },
}

impl SelectorError {
    /// Whether the selector is not a URI template at all (rather than one over a limit): such
    /// a selector is taken as an exact topic.
    pub fn is_syntax(&self) -> bool {
        matches!(
            self,
            SelectorError::Unclosed { .. }
                | SelectorError::StrayClose { .. }
                | SelectorError::EmptyExpression { .. }
                | SelectorError::ReservedOperator { .. }
                | SelectorError::InvalidVariable { .. }
                | SelectorError::InvalidPrefix { .. }
        )
    }
}

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
            match Template::new(s) {
                Ok(template) => Ok(Selector::Template(template)),
                // A selector can be any string (the spec): one that is not a URI template
                // selects the topic equal to it, as in the reference hub.
                Err(err) if err.is_syntax() => Ok(Selector::Exact(s.to_owned())),
                Err(err) => Err(err),
            }
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
            Selector::Template(t) => t.is_match(topic),
        }
    }

    /// Mercure 1.0's `match` (exact) matcher: `*` is every topic, anything else the topic
    /// equal to it, braces included (1.0 has no URI templates).
    pub fn exact_match(s: &str) -> Result<Selector, SelectorError> {
        check_len(s)?;
        Ok(if s == "*" {
            Selector::Any
        } else {
            Selector::Exact(s.to_owned())
        })
    }

    /// Mercure 1.0's `match_urlpattern` matcher: `*` is every topic, anything else a WHATWG
    /// URL pattern, relative to `base` (the hub's URL).
    pub fn url_pattern(s: &str, base: &url::Url) -> Result<Selector, SelectorError> {
        if s == "*" {
            return Ok(Selector::Any);
        }
        Template::url_pattern(s, base).map(Selector::Template)
    }

    /// The selector's text.
    pub fn as_str(&self) -> &str {
        match self {
            Selector::Any => "*",
            Selector::Exact(exact) => exact,
            Selector::Template(t) => t.as_str(),
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

    /// The set of these selectors.
    pub fn from_selectors(selectors: Vec<Selector>) -> SelectorSet {
        SelectorSet {
            selectors: selectors.into_boxed_slice(),
        }
    }

    /// Whether the set has no selector (it matches nothing).
    pub fn is_empty(&self) -> bool {
        self.selectors.is_empty()
    }

    /// How many selectors it has.
    pub fn len(&self) -> usize {
        self.selectors.len()
    }

    /// Its selectors.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn m(selector: &str, topic: &str) -> bool {
        Selector::parse(selector).unwrap().matches(topic)
    }

    /// Why `selector` is not a URI template the hub compiles.
    fn err(selector: &str) -> SelectorError {
        Template::new(selector).unwrap_err()
    }

    /// Issue 15's audit: a selector that is not a valid URI template was refused (`400`, or
    /// `401` in a token's claim); the spec says a selector can be any string.
    #[test]
    fn a_selector_that_is_not_a_template_is_an_exact_topic() {
        for text in ["foo{x", "a{b c}", "x{}", "{", "a}{b}", "/{=x}", "/{abc:0}"] {
            let selector = Selector::parse(text).unwrap();
            assert_eq!(selector, Selector::Exact(text.into()), "{text}");
            assert!(selector.matches(text));
            assert!(!selector.matches("foo") && !selector.matches("x"), "{text}");
            assert!(err(text).is_syntax(), "{text}");
        }
        // Limits still refuse: those selectors are templates, only too costly ones.
        let costly = "{a:64}".repeat(13);
        assert!(matches!(
            Selector::parse(&costly),
            Err(SelectorError::PrefixBudget { .. })
        ));
        assert!(!err(&costly).is_syntax());
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
    fn url_patterns_match_urls_relative_to_the_hub() {
        let base = url::Url::parse("https://hub.example/.well-known/mercure").unwrap();
        let p = |s: &str| Selector::url_pattern(s, &base).unwrap();
        let books = p("https://example.com/books/:id");
        assert!(books.matches("https://example.com/books/1"));
        assert!(!books.matches("https://example.com/books/1/reviews"));
        assert!(!books.matches("https://other.example/books/1"));
        assert!(
            !books.matches("not a url at all: \u{0}"),
            "no URL, no match"
        );
        let relative = p("/books/:id");
        assert!(relative.matches("/books/1"));
        assert!(
            relative.matches("https://hub.example/books/1"),
            "the hub's origin"
        );
        assert!(!relative.matches("https://example.com/books/1"));
        assert_eq!(p("*"), Selector::Any);
        // Shared by every equal pattern on the same base, not across bases.
        let again = p("https://example.com/books/:id");
        assert!(Arc::ptr_eq(
            books.as_template().unwrap(),
            again.as_template().unwrap()
        ));
        let other = url::Url::parse("https://elsewhere.example/.well-known/mercure").unwrap();
        let elsewhere = Selector::url_pattern("/books/:id", &other).unwrap();
        assert!(!Arc::ptr_eq(
            relative.as_template().unwrap(),
            elsewhere.as_template().unwrap()
        ));
        assert!(elsewhere.matches("https://elsewhere.example/books/1"));
        // A regexp group the linear-time engine cannot run is refused, not run slowly.
        let err = Selector::url_pattern("/a/(\\w+)(?=x)", &base).unwrap_err();
        assert!(matches!(err, SelectorError::UrlPattern { .. }), "{err}");
        // Found by fuzzing: a `]` that closes no `[` in a hostname takes urlpattern 0.6.0's
        // unsigned bracket count below zero, an overflow panic where overflow checks are on.
        // They are off for that crate in every profile (Cargo.toml says why): such a pattern
        // gets the crate's answer, here as in a release build, and nothing panics.
        for pattern in ["https://e]", "https://e]:8080/x", "https://e]/[x", "/a]"] {
            let _ = Selector::url_pattern(pattern, &base);
        }
        for pattern in ["https://[\\:\\:1]/x", "/a\\]", "/([\\]])", "/:id([a-z]+)"] {
            Selector::url_pattern(pattern, &base).unwrap_or_else(|err| panic!("{pattern}: {err}"));
        }
        // 1.0's exact matcher takes braces as they are.
        let exact = Selector::exact_match("https://example.com/{id}").unwrap();
        assert!(exact.matches("https://example.com/{id}"));
        assert!(!exact.matches("https://example.com/1"));
    }

    #[test]
    fn template_matches_its_own_text() {
        let t = "https://example.com/books/{id}";
        let selector = Selector::parse(t).unwrap();
        assert!(selector.as_template().unwrap().is_match(t));
        assert!(selector.matches(t));
        assert!(!selector.matches("https://example.com/books/{other}"));
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
        let too_long = "x".repeat(MAX_SELECTOR_LEN + 1);
        assert!(matches!(
            SelectorSet::parse(["ok", too_long.as_str()]),
            Err(SelectorError::TooLong { .. })
        ));
    }
}
