//! The hub: the pieces of a running hub (history, dispatcher, verifier, metrics, settings) and
//! its life cycle. `http/` serves it; `server.rs` accepts connections for it.

use crate::auth::Verifier;
use crate::dispatch::Dispatcher;
use crate::history::History;
use crate::metrics::Metrics;
use crate::stream::WriteLimits;
use crate::subscriptions::Subscriptions;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Behaviour settings of a hub, resolved from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Subscribers without a token receive public updates.
    pub anonymous: bool,
    /// Period of heartbeat comments on idle streams; `None` disables them.
    pub heartbeat: Option<Duration>,
    /// Origins allowed by CORS (`*` allows any, echoing the request's origin for credentials).
    pub cors_origins: Vec<String>,
    /// Subscription events and the subscriptions API.
    pub subscriptions: bool,
    /// Largest publish request body, in bytes.
    pub max_body: usize,
    /// Updates queued per subscriber before it falls back to catching up from history.
    pub queue_size: usize,
    /// Most `topic` selectors in one request.
    pub max_topics: usize,
    /// Bytes of updates queued per subscriber before it falls back to catching up from
    /// history (as `queue_size` counts them).
    pub queue_bytes: usize,
    /// A subscriber whose socket takes no byte for this long is closed (it resumes with
    /// `Last-Event-ID`).
    pub write_timeout: Duration,
    /// Most bytes owed to all subscribers together (taken for them, not yet written); beyond,
    /// subscribers whose writes are blocked are closed.
    pub max_owed_bytes: usize,
    /// TCP keepalive idle time, so that vanished peers are found; `None` disables it.
    pub tcp_keepalive: Option<Duration>,
    /// Most bytes a connection's socket holds not yet sent (`TCP_NOTSENT_LOWAT`, Linux); `None`
    /// leaves the system's default (the whole send buffer, autotuned up to megabytes). Updates
    /// for a subscriber that reads slowly then wait in its queue, where a newer update of a
    /// latest-value topic supersedes them, rather than stale in the kernel.
    pub tcp_notsent_lowat: Option<u32>,
    /// Time a client has to send each request head, counted from when the hub starts waiting
    /// for it: this is also how long a keep-alive connection may stay idle between requests.
    pub header_timeout: Duration,
    /// Time a client has to send a request body (a publish), before [`Settings::body_min_rate`]
    /// extends it.
    pub body_timeout: Duration,
    /// Bytes per second a body must keep up once it is late: every this many bytes received
    /// extend [`Settings::body_timeout`] by a second, so a large body on a slow link arrives
    /// while one that trickles is cut off (as Apache's `mod_reqtimeout` `MinRate`). 0: the
    /// timeout is for the whole body.
    pub body_min_rate: usize,
    /// The key the console may mint tokens with, for clients on this machine only: set it
    /// when the hub made its own key (development), never with a key that others hold.
    pub mint_key: Option<crate::console::MintKey>,
    /// Most connections open at once; beyond, new ones get `503` and are closed. Keep it below
    /// the process's file descriptor limit, so that the hub can always accept, answer and
    /// open its own files.
    pub max_connections: usize,
    /// Connections kept for everything but subscriptions (health checks, publishers, the
    /// API): a subscription is refused with `503` and `Retry-After` once the open connections
    /// reach `max_connections - reserved_connections`.
    pub reserved_connections: usize,
    /// Most connections open at once from one client address; `None` for no limit (behind a
    /// proxy every client has the proxy's address).
    pub max_connections_per_ip: Option<usize>,
    /// Memory all distinct compiled URI templates may take (process-wide, see
    /// [`crate::topic::set_template_budget`]).
    pub template_budget: usize,
    /// Most streams (requests, subscriptions) one HTTP/2 connection may have open at once
    /// (`SETTINGS_MAX_CONCURRENT_STREAMS`).
    pub http2_max_streams: u32,
    /// Which generations of Mercure the hub serves (`--protocol`).
    pub protocol: Protocol,
    /// Selectors whose topics' retained updates every subscription receives first, as if it
    /// asked with `retained=1` (`--retain`, a Herald extension).
    pub retain: Vec<String>,
    /// Selectors of latest-value topics: a subscriber catching up gets only the newest update
    /// of each such topic it is owed (`--conflate`, a Herald extension; see [`crate::conflate`]).
    pub conflate: Vec<String>,
}

/// Which generations of Mercure a hub serves: both at once (the default), or one. A request
/// or a token of the other generation is refused, saying which one the hub serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// Both generations, each request and token read as its own.
    #[default]
    Both,
    /// Mercure 0.x only: `topic=` subscriptions and JWTs with a `mercure` claim.
    V0,
    /// Mercure 1.0 only: `match*=` subscriptions and `at+jwt` access tokens.
    V1,
}

impl Protocol {
    /// Whether it serves Mercure 0.x.
    pub fn serves_v0(self) -> bool {
        self != Protocol::V1
    }

    /// Whether it serves Mercure 1.0.
    pub fn serves_v1(self) -> bool {
        self != Protocol::V0
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            anonymous: false,
            heartbeat: Some(Duration::from_secs(15)),
            cors_origins: Vec::new(),
            subscriptions: false,
            max_body: 1 << 20,
            queue_size: 1024,
            max_topics: 1000,
            queue_bytes: 4 << 20,
            write_timeout: Duration::from_secs(60),
            max_owed_bytes: 64 << 20,
            tcp_keepalive: Some(Duration::from_secs(60)),
            tcp_notsent_lowat: Some(16 * 1024),
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            body_min_rate: 1024,
            mint_key: None,
            max_connections: usize::MAX,
            reserved_connections: 64,
            max_connections_per_ip: None,
            template_budget: crate::topic::DEFAULT_TEMPLATE_BUDGET,
            http2_max_streams: 128,
            protocol: Protocol::Both,
            retain: Vec::new(),
            conflate: Vec::new(),
        }
    }
}

/// A hub. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Hub {
    pub(crate) inner: Arc<HubState>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

pub(crate) struct HubState {
    pub history: Arc<dyn History>,
    pub dispatcher: Dispatcher,
    pub verifier: Verifier,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    pub shutdown: watch::Sender<bool>,
    /// Present when subscription events and the subscriptions API are enabled.
    pub subscriptions: Option<Arc<Subscriptions>>,
    pub write_limits: Arc<WriteLimits>,
    /// Present with `--conflate`.
    pub conflation: Option<Arc<crate::conflate::Conflation>>,
}

impl Hub {
    /// Builds a hub on `history` and starts its dispatcher task (needs a tokio runtime).
    ///
    /// # Panics
    /// If `history`'s feed was already taken (a history backs exactly one hub).
    pub fn start(history: Arc<dyn History>, verifier: Verifier, settings: Settings) -> Hub {
        crate::topic::set_template_budget(settings.template_budget);
        let verifier = verifier.with_protocol(settings.protocol);
        let metrics = Arc::new(Metrics::default());
        let dispatcher =
            Dispatcher::new(settings.queue_size, settings.queue_bytes, metrics.clone());
        let feed = history
            .take_feed()
            .expect("a history backend serves exactly one hub");
        dispatcher.starts_after(feed.after);
        let subscriptions: Option<Arc<Subscriptions>> = settings
            .subscriptions
            .then(|| Arc::new(Subscriptions::unseeded()));
        if let Some(view) = subscriptions.clone() {
            let (history, until) = (history.clone(), feed.after);
            tokio::spawn(async move { view.seed(history.as_ref(), until).await });
        }
        // Checked by `herald serve` at start; a selector that does not parse conflates nothing.
        let conflation = (!settings.conflate.is_empty())
            .then(|| crate::topic::SelectorSet::parse(&settings.conflate).ok())
            .flatten()
            .map(|selectors| Arc::new(crate::conflate::Conflation::new(selectors)));
        {
            let (dispatcher, subscriptions) = (dispatcher.clone(), subscriptions.clone());
            let conflation = conflation.clone();
            tokio::spawn(async move {
                dispatcher
                    .run(feed, |update| {
                        if let Some(conflation) = &conflation {
                            conflation.observe(update);
                        }
                        if let Some(view) = &subscriptions {
                            view.apply(update);
                        }
                    })
                    .await;
            });
        }
        if let Some(period) = settings.heartbeat {
            tokio::spawn(dispatcher.clone().heartbeats(period));
        }
        let (shutdown, _) = watch::channel(false);
        Hub {
            inner: Arc::new(HubState {
                write_limits: Arc::new(WriteLimits {
                    timeout: settings.write_timeout,
                    max_owed: settings.max_owed_bytes,
                }),
                subscriptions,
                conflation,
                history,
                dispatcher,
                verifier,
                metrics,
                settings,
                shutdown,
            }),
        }
    }

    /// The hub's counters and gauges.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Ends every subscriber stream cleanly (clients then reconnect elsewhere).
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
        self.inner.dispatcher.close_all();
    }

    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.inner.shutdown.subscribe()
    }
}
