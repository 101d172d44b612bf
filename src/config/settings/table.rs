//! The table of route settings: [`ROUTE`] and a `const` per setting, each declaring its key, flag,
//! default, reload behaviour, doc line, start-line rendering and example (the type is in the parent).

use super::{hidden, millis, millis_or_off, Base, Example, OnReload, Setting};
use crate::config::{Mode, Protocol};

/// Every route setting, in the order of docs/config.md's table.
pub const ROUTE: &[Setting] = &[
    NAME,
    LISTEN,
    UPSTREAMS,
    BALANCE,
    BUFFER_SIZE,
    MAX_CONNECTIONS,
    CONNECT_TIMEOUT,
    CONNECT_ATTEMPTS,
    IDLE_TIMEOUT,
    FIN_TIMEOUT,
    MAX_CONNECTION_DURATION,
    HEALTH_INTERVAL,
    HEALTH_TIMEOUT,
    FALL,
    RISE,
    HEALTH_SEND,
    HEALTH_EXPECT,
    RESOLVE_INTERVAL,
    NODELAY,
    KEEPALIVE,
    BACKLOG,
    UNIX_MODE,
    MODE,
    ALLOW,
    PROXY_AUTH,
    SEND_PROXY,
    SEND_PROXY_TLVS,
    ACCEPT_PROXY,
    HEADER_TIMEOUT,
    // Per-client limits and listener access (docs/operations.md#per-client-limits).
    MAX_CONNS_PER_CLIENT,
    CONN_RATE_PER_CLIENT,
    PER_CLIENT_PREFIX,
    CLIENT_ALLOW,
    CLIENT_DENY,
    QUEUE_TIMEOUT,
    SNI,
    ALPN,
    DEFAULT,
    UDP_IDLE_TIMEOUT,
    UDP_MAX_SESSIONS,
];

const NAME: Setting = Setting {
    key: "name",
    flag: None,
    value: "",
    default: "`route-N`",
    on_reload: OnReload::Matches,
    doc: "names the route in logs and metrics; how a reload recognises it",
    show: hidden,
    example: None,
};

const LISTEN: Setting = Setting {
    key: "listen",
    flag: Some("listen"),
    value: "ADDR",
    default: "required",
    on_reload: OnReload::Matches,
    doc: "address(es) to accept on: `IP:PORT`, `[IPv6]:PORT` or `HOST:PORT` (a host name is resolved at start and at each reload, and every address it has is bound), `unix:/PATH` or `unix:@NAME` ([Unix sockets](unix-sockets.md)); port 0 picks a free port (logged); an unnamed route is recognised by its set of addresses",
    show: hidden,
    example: None,
};

const UPSTREAMS: Setting = Setting {
    key: "upstreams",
    flag: Some("upstream"),
    value: "HOST:PORT[,weight=N]",
    default: "required",
    on_reload: OnReload::Replaces,
    doc: "1..64 entries, `\"HOST:PORT\"`, `\"HOST:PORT,weight=N\"` or `{ addr, weight }`; weight 1..10000; a name's every address (up to 16) is an endpoint sharing the weight (see [Host names](#host-names)); `unix:/PATH` or `unix:@NAME` is a Unix stream socket ([Unix sockets](unix-sockets.md)); the flag is repeated, once per upstream",
    show: hidden,
    example: None,
};

pub const BALANCE: Setting = Setting {
    key: "balance",
    flag: Some("balance"),
    value: "ALGORITHM",
    default: "`\"round-robin\"`",
    on_reload: OnReload::Replaces,
    doc: "`round-robin`, `least-conn`, `random-two`, `source-hash`",
    show: |c| Some(c.balance.to_string()),
    example: Some(Example {
        base: Base::Forward,
        flags: &["--balance", "least-conn"],
        toml: "balance = \"least-conn\"",
    }),
};

pub const BUFFER_SIZE: Setting = Setting {
    key: "buffer_size",
    flag: Some("buffer_size"),
    value: "SIZE",
    default: "`\"64k\"`",
    on_reload: OnReload::Replaces,
    doc: "ring size per direction (1k..256m)",
    show: |c| Some(c.buffer_size.to_string()),
    example: Some(Example {
        base: Base::Forward,
        flags: &["--buffer-size", "16k"],
        toml: "buffer_size = \"16k\"",
    }),
};

const MAX_CONNECTIONS: Setting = Setting {
    key: "max_connections",
    flag: Some("max_connections"),
    value: "N",
    default: "the whole fd budget",
    on_reload: OnReload::Replaces,
    doc: "most connections of this route at once; every route draws on one process-wide budget of `(RLIMIT_NOFILE - reserve) / 2` pairs besides (see `--max-connections` in the README), so the routes together never hold more",
    show: |c| Some(c.max_connections.to_string()),
    example: Some(Example {
        base: Base::Forward,
        flags: &["--max-connections", "7"],
        toml: "max_connections = 7",
    }),
};

pub const CONNECT_TIMEOUT: Setting = Setting {
    key: "connect_timeout",
    flag: Some("connect_timeout"),
    value: "DURATION",
    default: "`\"5s\"`",
    on_reload: OnReload::Replaces,
    doc: "per connect attempt",
    show: |c| Some(millis(c.connect_timeout)),
    example: Some(Example {
        base: Base::Forward,
        flags: &["--connect-timeout", "500ms"],
        toml: "connect_timeout = \"500ms\"",
    }),
};

const CONNECT_ATTEMPTS: Setting = Setting {
    key: "connect_attempts",
    flag: Some("connect_attempts"),
    value: "N",
    default: "`3`, or fewer when the upstreams cannot have three endpoints (IP literals count 1, names 16)",
    on_reload: OnReload::Replaces,
    doc: "endpoints tried for one client (at most one attempt each; they may be addresses of one name)",
    show: |c| Some(c.connect_attempts.to_string()),
    example: Some(Example {
        base: Base::Forward,
        flags: &["--connect-attempts", "1"],
        toml: "connect_attempts = 1",
    }),
};

const IDLE_TIMEOUT: Setting = Setting {
    key: "idle_timeout",
    flag: Some("idle_timeout"),
    value: "DURATION",
    default: "off",
    on_reload: OnReload::Replaces,
    doc: "close a connection idle both ways this long (`\"0\"` = off)",
    show: |c| millis_or_off(c.idle_timeout),
    example: Some(Example {
        base: Base::Forward,
        flags: &["--idle-timeout", "10m"],
        toml: "idle_timeout = \"10m\"",
    }),
};

pub const FIN_TIMEOUT: Setting = Setting {
    key: "fin_timeout",
    flag: Some("fin_timeout"),
    value: "DURATION",
    default: "`\"60s\"`",
    on_reload: OnReload::Replaces,
    doc: "close a half-closed connection idle this long",
    show: |c| Some(millis(c.fin_timeout)),
    example: Some(Example {
        base: Base::Forward,
        flags: &["--fin-timeout", "30s"],
        toml: "fin_timeout = \"30s\"",
    }),
};

const MAX_CONNECTION_DURATION: Setting = Setting {
    key: "max_connection_duration",
    flag: Some("max_connection_duration"),
    value: "DURATION",
    default: "off",
    on_reload: OnReload::Replaces,
    doc: "close an established connection this long after its accept, busy or not (close cause `max-duration`; `\"0\"` = off)",
    show: |c| c.max_connection_duration.map(millis),
    example: Some(Example {
        base: Base::Forward,
        flags: &["--max-connection-duration", "1h"],
        toml: "max_connection_duration = \"1h\"",
    }),
};

const HEALTH_INTERVAL: Setting = Setting {
    key: "health_interval",
    flag: Some("health_interval"),
    value: "DURATION",
    default: "off",
    on_reload: OnReload::Replaces,
    doc: "probe each upstream with a TCP connect this often",
    show: |c| millis_or_off(c.health_interval),
    example: Some(Example {
        base: Base::Forward,
        flags: &["--health-interval", "2s"],
        toml: "health_interval = \"2s\"",
    }),
};

pub const HEALTH_TIMEOUT: Setting = Setting {
    key: "health_timeout",
    flag: Some("health_timeout"),
    value: "DURATION",
    default: "`\"2s\"`",
    on_reload: OnReload::Replaces,
    doc: "how long a probe may take",
    show: |c| c.health_interval.map(|_| millis(c.health_timeout)),
    example: Some(Example {
        base: Base::Forward,
        flags: &["--health-timeout", "1s"],
        toml: "health_timeout = \"1s\"",
    }),
};

pub const FALL: Setting = Setting {
    key: "fall",
    flag: Some("fall"),
    value: "N",
    default: "`3`",
    on_reload: OnReload::Replaces,
    doc: "consecutive failures that mark an upstream down",
    show: hidden,
    example: Some(Example {
        base: Base::Forward,
        flags: &["--fall", "5"],
        toml: "fall = 5",
    }),
};

pub const RISE: Setting = Setting {
    key: "rise",
    flag: Some("rise"),
    value: "N",
    default: "`2`",
    on_reload: OnReload::Replaces,
    doc: "consecutive successes (probes, or connects) that mark a down upstream up again; with `health_interval`, a down upstream gets no client until then",
    show: hidden,
    example: Some(Example {
        base: Base::Forward,
        flags: &["--rise", "3"],
        toml: "rise = 3",
    }),
};

const HEALTH_SEND: Setting = Setting {
    key: "health_send",
    flag: Some("health_send"),
    value: "TEXT",
    default: "off",
    on_reload: OnReload::Replaces,
    doc: "what each probe writes once connected, at most 1 KiB, with the escapes `\\r` `\\n` `\\t` `\\\\` `\\xHH` (`\"PING\\r\\n\"`); needs `health_interval` (refused without: no probe would send it) ([operations.md](operations.md#health-checks))",
    show: hidden,
    example: Some(Example {
        base: Base::Forward,
        flags: &["--health-interval", "2s", "--health-send", "PING\\r\\n"],
        toml: "health_interval = \"2s\"\nhealth_send = \"PING\\\\r\\\\n\"",
    }),
};

const HEALTH_EXPECT: Setting = Setting {
    key: "health_expect",
    flag: Some("health_expect"),
    value: "TEXT",
    default: "off",
    on_reload: OnReload::Replaces,
    doc: "the prefix each probe's answer must start with (at most 1 KiB, escaped as `health_send`; `\"+PONG\"`): read until it came, a byte differs, the upstream closes or `health_timeout`; anything but the prefix is a failure",
    show: hidden,
    example: Some(Example {
        base: Base::Forward,
        flags: &["--health-interval", "2s", "--health-expect", "+PONG"],
        toml: "health_interval = \"2s\"\nhealth_expect = \"+PONG\"",
    }),
};

const RESOLVE_INTERVAL: Setting = Setting {
    key: "resolve_interval",
    flag: Some("resolve_interval"),
    value: "DURATION",
    default: "`\"30s\"` if an upstream is a host name, else off",
    on_reload: OnReload::Replaces,
    doc: "how often host names are re-resolved (also how often a name that does not resolve is asked again; `\"0s\"` = off, then only a reload asks again)",
    show: |c| c.resolve_interval.map(millis),
    example: Some(Example {
        base: Base::Forward,
        flags: &["--resolve-interval", "5m"],
        toml: "resolve_interval = \"5m\"",
    }),
};

const NODELAY: Setting = Setting {
    key: "nodelay",
    flag: Some("no_nodelay"),
    value: "",
    default: "`true`",
    on_reload: OnReload::Replaces,
    doc: "TCP_NODELAY on both sides (the flag turns it off)",
    show: |c| (!c.nodelay).then(|| "off".to_string()),
    example: Some(Example {
        base: Base::Forward,
        flags: &["--no-nodelay"],
        toml: "nodelay = false",
    }),
};

const KEEPALIVE: Setting = Setting {
    key: "keepalive",
    flag: Some("keepalive"),
    value: "DURATION",
    default: "off",
    on_reload: OnReload::Replaces,
    doc: "TCP keepalive idle time on both sides (whole seconds, 1s to 32767s)",
    show: |c| c.keepalive.map(millis),
    example: Some(Example {
        base: Base::Forward,
        flags: &["--keepalive", "60s"],
        toml: "keepalive = \"60s\"",
    }),
};

pub const BACKLOG: Setting = Setting {
    key: "backlog",
    flag: Some("backlog"),
    value: "N",
    default: "`1024`",
    on_reload: OnReload::Replaces,
    doc: "listen backlog",
    show: hidden,
    example: Some(Example {
        base: Base::Forward,
        flags: &["--backlog", "64"],
        toml: "backlog = 64",
    }),
};

pub const UNIX_MODE: Setting = Setting {
    key: "unix_mode",
    flag: Some("unix_mode"),
    value: "OCTAL",
    default: "`\"0660\"`",
    on_reload: OnReload::Replaces,
    doc: "permission bits of the socket files of `unix:/PATH` listeners ([Unix sockets](unix-sockets.md))",
    show: |c| (!c.listen_unix.is_empty()).then(|| format!("{:04o}", c.unix_mode)),
    example: Some(Example {
        base: Base::Forward,
        flags: &["--unix-mode", "600"],
        toml: "unix_mode = \"600\"",
    }),
};

const MODE: Setting = Setting {
    key: "mode",
    flag: Some("mode"),
    value: "MODE",
    default: "`\"forward\"`",
    on_reload: OnReload::Replaces,
    doc: "`\"forward\"`, or `\"connect\"`: an HTTP CONNECT proxy (then `upstreams` is left out and `allow` is required)",
    show: |c| (c.mode == Mode::Connect).then(|| "connect".to_string()),
    example: None,
};

const ALLOW: Setting = Setting {
    key: "allow",
    flag: Some("allow"),
    value: "DEST:PORT",
    default: "none",
    on_reload: OnReload::Replaces,
    doc: "connect mode: array of `\"DEST:PORT\"` rules (see below); anything else gets 403; the flag is repeated, once per rule",
    show: hidden,
    example: None,
};

const PROXY_AUTH: Setting = Setting {
    key: "proxy_auth",
    flag: Some("proxy_auth"),
    value: "USER:PASS",
    default: "off",
    on_reload: OnReload::Replaces,
    doc: "connect mode: `\"USER:PASS\"` clients must send as `Proxy-Authorization: Basic` (407 otherwise)",
    show: hidden,
    example: Some(Example {
        base: Base::Connect,
        flags: &["--proxy-auth", "alice:s3cret"],
        toml: "proxy_auth = \"alice:s3cret\"",
    }),
};

const SEND_PROXY: Setting = Setting {
    key: "send_proxy",
    flag: Some("send_proxy"),
    value: "VERSION",
    default: "off",
    on_reload: OnReload::Replaces,
    doc: "`\"v1\"` or `\"v2\"`: a PROXY protocol header first in every upstream stream",
    show: |c| c.send_proxy.map(|version| format!("{version:?}")),
    example: Some(Example {
        base: Base::Forward,
        flags: &["--send-proxy", "v1"],
        toml: "send_proxy = \"v1\"",
    }),
};

const SEND_PROXY_TLVS: Setting = Setting {
    key: "send_proxy_tlvs",
    flag: Some("send_proxy_tlvs"),
    value: "LIST",
    default: "`[]`",
    on_reload: OnReload::Replaces,
    doc: "any of `\"authority\"`, `\"alpn\"`, `\"unique_id\"`: those TLVs of the client's own v2 header are repeated in the upstream's; needs `send_proxy = \"v2\"` and `accept_proxy = true` ([carrying TLVs](proxy-protocol.md#carrying-tlvs-upstream)); the flag takes them comma-separated",
    show: |c| (!c.send_proxy_tlvs.is_empty()).then(|| c.send_proxy_tlvs.names()),
    example: Some(Example {
        base: Base::Forward,
        flags: &[
            "--send-proxy",
            "v2",
            "--accept-proxy",
            "--send-proxy-tlvs",
            "alpn,unique_id",
        ],
        toml: "send_proxy = \"v2\"\naccept_proxy = true\nsend_proxy_tlvs = [\"alpn\", \"unique_id\"]",
    }),
};

const ACCEPT_PROXY: Setting = Setting {
    key: "accept_proxy",
    flag: Some("accept_proxy"),
    value: "",
    default: "`false`",
    on_reload: OnReload::Replaces,
    doc: "clients start with a PROXY protocol header (v1/v2); its source is the client address; a malformed one closes the client ([rules](proxy-protocol.md))",
    show: |c| c.accept_proxy.then(|| "on".to_string()),
    example: Some(Example {
        base: Base::Forward,
        flags: &["--accept-proxy"],
        toml: "accept_proxy = true",
    }),
};

pub const HEADER_TIMEOUT: Setting = Setting {
    key: "header_timeout",
    flag: Some("header_timeout"),
    value: "DURATION",
    default: "`\"10s\"`",
    on_reload: OnReload::Replaces,
    doc: "how long a client may take to send its PROXY header, CONNECT head or TLS ClientHello (SNI routing)",
    show: |c| {
        (c.accept_proxy || c.mode == Mode::Connect || c.sni.is_set())
            .then(|| millis(c.header_timeout))
    },
    example: Some(Example {
        base: Base::Forward,
        flags: &["--header-timeout", "3s"],
        toml: "header_timeout = \"3s\"",
    }),
};

const MAX_CONNS_PER_CLIENT: Setting = Setting {
    key: "max_conns_per_client",
    flag: Some("max_conns_per_client"),
    value: "N",
    default: "off",
    on_reload: OnReload::Replaces,
    doc: "most connections open at once from one client (a `per_client_prefix` network); more are reset (RST) at accept, or after the PROXY header with `accept_proxy`; a reload that replaces the route keeps counting (the table goes by route name)",
    show: |c| c.max_conns_per_client.map(|n| n.to_string()),
    example: Some(Example {
        base: Base::Forward,
        flags: &["--max-conns-per-client", "4"],
        toml: "max_conns_per_client = 4",
    }),
};

const CONN_RATE_PER_CLIENT: Setting = Setting {
    key: "conn_rate_per_client",
    flag: Some("conn_rate_per_client"),
    value: "N/DURATION",
    default: "off",
    on_reload: OnReload::Replaces,
    doc: "`\"N/DURATION\"`: most new connections from one client in each fixed window (from its first connection); more are reset (RST); a reload that replaces the route keeps counting (the table goes by route name)",
    show: |c| c.conn_rate_per_client.map(|rate| rate.to_string()),
    example: Some(Example {
        base: Base::Forward,
        flags: &["--conn-rate-per-client", "20/10s"],
        toml: "conn_rate_per_client = \"20/10s\"",
    }),
};

pub const PER_CLIENT_PREFIX: Setting = Setting {
    key: "per_client_prefix",
    flag: Some("per_client_prefix"),
    value: "V4,V6",
    default: "`\"32,128\"`",
    on_reload: OnReload::Replaces,
    doc: "what one client is for the two limits above: IPv4 and IPv6 prefix lengths (`\"24,64\"`: each /24 and /64)",
    show: |c| {
        (c.max_conns_per_client.is_some() || c.conn_rate_per_client.is_some())
            .then(|| c.per_client_prefix.to_string())
    },
    example: Some(Example {
        base: Base::Forward,
        flags: &["--per-client-prefix", "24,64"],
        toml: "per_client_prefix = \"24,64\"",
    }),
};

const CLIENT_ALLOW: Setting = Setting {
    key: "client_allow",
    flag: Some("client_allow"),
    value: "CIDR",
    default: "`[]`",
    on_reload: OnReload::Replaces,
    doc: "CIDRs whose clients may connect; when any is given, an address no rule matches is reset at once; the most specific rule of `client_allow` and `client_deny` wins, deny on a tie (not `allow`, which is connect mode's destinations); the flag is repeated",
    show: |c| (!c.client_acl.allow.is_empty()).then(|| c.client_acl.allow.len().to_string()),
    example: Some(Example {
        base: Base::Forward,
        flags: &["--client-allow", "10.0.0.0/8", "--client-allow", "::1"],
        toml: "client_allow = [\"10.0.0.0/8\", \"::1\"]",
    }),
};

const CLIENT_DENY: Setting = Setting {
    key: "client_deny",
    flag: Some("client_deny"),
    value: "CIDR",
    default: "`[]`",
    on_reload: OnReload::Replaces,
    doc: "CIDRs whose clients are reset (RST) at once, checked on the PROXY header's address with `accept_proxy`; the flag is repeated",
    show: |c| (!c.client_acl.deny.is_empty()).then(|| c.client_acl.deny.len().to_string()),
    example: Some(Example {
        base: Base::Forward,
        flags: &["--client-deny", "192.0.2.0/24"],
        toml: "client_deny = [\"192.0.2.0/24\"]",
    }),
};

const QUEUE_TIMEOUT: Setting = Setting {
    key: "queue_timeout",
    flag: Some("queue_timeout"),
    value: "DURATION",
    default: "off",
    on_reload: OnReload::Replaces,
    doc: "once the route has been at `max_connections` this long with a client queued and none taken, the clients queued are accepted and reset (RST) instead of waiting on ([what it measures](operations.md#per-client-limits-and-access); `\"0\"` = off)",
    show: |c| c.queue_timeout.map(millis),
    example: Some(Example {
        base: Base::Forward,
        flags: &["--queue-timeout", "2s"],
        toml: "queue_timeout = \"2s\"",
    }),
};
// SNI routing is file-only: several routes sharing one listen address is something only a file can
// declare (the flags make one route).

const SNI: Setting = Setting {
    key: "sni",
    flag: None,
    value: "",
    default: "none",
    on_reload: OnReload::Replaces,
    doc: "TLS server names this route takes, `\"api.example.com\"` or `\"*.example.com\"` (one label), read from the client's ClientHello without terminating TLS; routes with `sni` or `default` may share a listen address ([SNI routing](tls-sni.md))",
    show: |c| (!c.sni.names.is_empty()).then(|| join(&c.sni.names)),
    example: None,
};

const ALPN: Setting = Setting {
    key: "alpn",
    flag: None,
    value: "",
    default: "any",
    on_reload: OnReload::Replaces,
    doc: "with `sni`: the route takes a name's hellos only when the client offers one of these protocols (e.g. `[\"acme-tls/1\"]`); it wins over a route of the same name without `alpn`",
    show: |c| (!c.sni.alpn.is_empty()).then(|| join(&c.sni.alpn)),
    example: None,
};

const DEFAULT: Setting = Setting {
    key: "default",
    flag: None,
    value: "",
    default: "`false`",
    on_reload: OnReload::Replaces,
    doc: "SNI routing: this route takes the hellos no route's `sni` matches, those without a name and ECH ones; without one they get an `unrecognized_name` alert",
    show: |c| c.sni.default.then(|| "on".to_string()),
    example: None,
};

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

pub const UDP_IDLE_TIMEOUT: Setting = Setting {
    key: "udp_idle_timeout",
    flag: Some("udp_idle_timeout"),
    value: "DURATION",
    default: "`\"60s\"`",
    on_reload: OnReload::Replaces,
    doc: "udp routes: close a session with no datagram either way this long ([UDP](udp.md)); ignored by tcp routes",
    show: |c| (c.protocol == Protocol::Udp).then(|| millis(c.udp_idle_timeout)),
    example: Some(Example {
        base: Base::Udp,
        flags: &["--udp-idle-timeout", "5s"],
        toml: "udp_idle_timeout = \"5s\"",
    }),
};

const UDP_MAX_SESSIONS: Setting = Setting {
    key: "udp_max_sessions",
    flag: Some("udp_max_sessions"),
    value: "N",
    default: "the fd budget",
    on_reload: OnReload::Replaces,
    doc: "udp routes: most sessions (client addresses) at once, each holding one socket; a new client past it evicts the least recently used; ignored by tcp routes",
    show: |c| (c.protocol == Protocol::Udp).then(|| c.udp_max_sessions.to_string()),
    example: Some(Example {
        base: Base::Udp,
        flags: &["--udp-max-sessions", "7"],
        toml: "udp_max_sessions = 7",
    }),
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_flag_default_is_the_documented_literal() {
        assert_eq!(CONNECT_TIMEOUT.flag_default(), "5s");
        assert_eq!(BACKLOG.flag_default(), "1024");
        assert_eq!(IDLE_TIMEOUT.flag_default(), "");
        assert_eq!(CONNECT_ATTEMPTS.flag_default(), "");
    }
}
