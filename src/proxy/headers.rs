//! Standard proxy headers: `X-Forwarded-*` towards origins, hop-by-hop
//! headers stripped from responses.
//!
//! Pingora 0.9 already strips hop-by-hop headers (and those named in
//! `Connection`) from requests before they reach an origin; responses are
//! ours to clean.

use super::answers::Canned;
use http::header::{self, HeaderName, HeaderValue};
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use smallvec::SmallVec;
use std::net::IpAddr;

// Header names as constants: removing by `HeaderName` skips parsing a name
// per header per request (most of what these functions cost). Added with
// the case they are written in, so that nothing is allocated for it.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// Hop-by-hop response headers (RFC 9110 §7.6.1) that must not reach the client.
/// `Transfer-Encoding` is left to Pingora, which re-frames the body itself.
/// `Connection` comes first in both lists: [`held`] looks at its value, and
/// its bit is [`CONNECTION_HELD`].
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

const CONNECTION_HELD: u16 = 1;

/// Hop-by-hop request headers (RFC 9110 §7.6.1) that Pingora strips before a
/// request reaches an origin, and `Expect`: a sequenced write is sent whole.
const HOP_BY_HOP_REQUEST: [HeaderName; 11] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HTTP2_SETTINGS,
    header::EXPECT,
];

/// Removes hop-by-hop headers, and the headers the client's `Connection`
/// header nominated, from a request hothot sends itself (as Pingora does for
/// the requests it proxies).
pub fn strip_hop_by_hop_request(request: &mut RequestHeader) {
    let (held, nominates) = held(&request.headers, &HOP_BY_HOP_REQUEST);
    let nominated = nominated(&request.headers, nominates);
    for name in chosen(&HOP_BY_HOP_REQUEST, held).chain(&nominated) {
        request.remove_header(name);
    }
}

/// Which of `names` (at most 16) the headers hold, a bit per name, found in
/// one pass over the message's headers, and whether its `Connection`
/// header (the first name) nominates others: anything but one `keep-alive`
/// or `close`, which is what nearly every message says. Most messages hold
/// one or none of the names (nginx sends `Connection` with every answer);
/// removing every listed name instead cost a lookup in each of Pingora's
/// two header maps per name.
fn held<const N: usize>(headers: &http::HeaderMap, names: &[HeaderName; N]) -> (u16, bool) {
    const { assert!(N <= 16) };
    let mut held = 0;
    let mut nominates = false;
    for (name, value) in headers {
        if let Some(position) = names.iter().position(|listed| listed == name) {
            if position == 0 {
                let value = value.as_bytes();
                let plain = value.eq_ignore_ascii_case(b"keep-alive")
                    || value.eq_ignore_ascii_case(b"close");
                nominates |= !plain || held & CONNECTION_HELD != 0;
            }
            held |= 1 << position;
        }
    }
    (held, nominates)
}

/// The names whose bit is set in `held`.
fn chosen(names: &[HeaderName], held: u16) -> impl Iterator<Item = &HeaderName> {
    names
        .iter()
        .enumerate()
        .filter(move |(position, _)| held & 1 << position != 0)
        .map(|(_, name)| name)
}

/// Header names listed in `Connection` (other than `close` and
/// `keep-alive`), when [`held`] found that it `nominates` any.
fn nominated(headers: &http::HeaderMap, nominates: bool) -> Vec<HeaderName> {
    if !nominates {
        return Vec::new();
    }
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|name| {
            !name.is_empty()
                && !name.eq_ignore_ascii_case(b"close")
                && !name.eq_ignore_ascii_case(b"keep-alive")
        })
        .filter_map(|name| HeaderName::from_bytes(name).ok())
        .collect()
}

/// Why a request's `Host` makes it a bad request, if it does: RFC 9112 §3.2
/// wants a 400 for an HTTP/1.1 request without `Host` (even in absolute
/// form) and for any request with more than one.
/// `hosts` is how many it has ([`crate::classify::HeaderFacts`]).
pub fn host_problem(version: http::Version, hosts: u8) -> Option<Canned> {
    if hosts > 1 {
        return Some(Canned::TwoHosts);
    }
    let needs_host = version == http::Version::HTTP_11;
    (needs_host && hosts == 0).then_some(Canned::NoHost)
}

/// Adds `X-Forwarded-For` (appending the client to what earlier proxies
/// wrote, on one line or several, as nginx's `$proxy_add_x_forwarded_for`),
/// `X-Forwarded-Proto` and `X-Forwarded-Host`.
pub fn add_forwarded(
    request: &mut RequestHeader,
    client: Option<IpAddr>,
    proto: &'static str,
) -> Result<()> {
    // An HTTP/1 request is read with room for these (vendor/pingora-core);
    // one read elsewhere (HTTP/2) may have none: then one growth of its
    // header maps for all three instead of one or more each.
    request.reserve(3)?;
    // One pass for both headers read here (see `HeaderFacts` for why):
    // most requests have one `Host` and no `X-Forwarded-For`.
    let mut host = None;
    let mut forwarded_before = false;
    for (name, value) in &request.headers {
        if name == http::header::HOST {
            host = host.or_else(|| Some(value.clone()));
        } else if name == X_FORWARDED_FOR {
            forwarded_before = true;
        }
    }
    if let Some(ip) = client {
        let forwarded_for = {
            let previous: SmallVec<[&str; 2]> = match forwarded_before {
                true => (request.headers.get_all(&X_FORWARDED_FOR).iter())
                    .filter_map(|value| value.to_str().ok())
                    .filter(|value| !value.trim().is_empty())
                    .collect(),
                false => SmallVec::new(),
            };
            forwarded_for(&previous, ip)
        };
        request.insert_header((&X_FORWARDED_FOR, "X-Forwarded-For"), forwarded_for)?;
    }
    request.insert_header(
        (&X_FORWARDED_PROTO, "X-Forwarded-Proto"),
        HeaderValue::from_static(proto),
    )?;
    let host = host.or_else(|| {
        request
            .uri
            .authority()
            .and_then(|a| a.as_str().parse().ok())
    });
    if let Some(host) = host {
        request.insert_header((&X_FORWARDED_HOST, "X-Forwarded-Host"), host)?;
    }
    Ok(())
}

/// The `previous` lines (those that say something: visible ASCII, not
/// blank), then `ip`, joined by `, `, in a `Vec` exactly as long as its
/// capacity: such a `Vec` becomes the header value's bytes as it is, where
/// spare capacity cost a second allocation.
fn forwarded_for(previous: &[&str], ip: IpAddr) -> Vec<u8> {
    let mut text = [0u8; IP_TEXT_MAX];
    let ip = ip_text(ip, &mut text);
    let length = previous.iter().map(|line| line.len() + 2).sum::<usize>() + ip.len();
    let mut value = Vec::with_capacity(length);
    for line in previous {
        value.extend_from_slice(line.as_bytes());
        value.extend_from_slice(b", ");
    }
    value.extend_from_slice(ip);
    value
}

/// The longest text of an IP address (an IPv6 address with an IPv4 tail).
const IP_TEXT_MAX: usize = 45;

/// `ip` as text, written into `buffer`. An IPv4 address is written digit
/// by digit: through `Display`, formatting it cost more than the rest of
/// [`add_forwarded`].
fn ip_text(ip: IpAddr, buffer: &mut [u8; IP_TEXT_MAX]) -> &[u8] {
    let mut length = 0;
    let mut push = |byte: u8| {
        buffer[length] = byte;
        length += 1;
    };
    match ip {
        IpAddr::V4(ip) => {
            for (position, octet) in ip.octets().into_iter().enumerate() {
                if position > 0 {
                    push(b'.');
                }
                if octet >= 100 {
                    push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    push(b'0' + octet / 10 % 10);
                }
                push(b'0' + octet % 10);
            }
        }
        IpAddr::V6(ip) => {
            use std::io::Write;
            let mut cursor = std::io::Cursor::new(&mut buffer[..]);
            // IP_TEXT_MAX holds any IPv6 address: this write cannot fail.
            let _ = write!(cursor, "{ip}");
            length = usize::try_from(cursor.position()).unwrap_or(IP_TEXT_MAX);
        }
    }
    &buffer[..length]
}

/// Removes hop-by-hop headers, and the headers the origin's `Connection`
/// header nominated, from a response. A 101 upgrade keeps its own.
///
/// `Connection` itself stays on a final answer: Pingora's HTTP/1 server
/// replaces it with its own (`keep-alive` or `close`, for the client's
/// connection) and its HTTP/2 server removes it, so removing it here too
/// cost a lookup in each of the response's two header maps for nothing.
pub fn strip_hop_by_hop(response: &mut ResponseHeader) {
    if response.status == http::StatusCode::SWITCHING_PROTOCOLS {
        return;
    }
    let (mut held, nominates) = held(&response.headers, &HOP_BY_HOP);
    let nominated = nominated(&response.headers, nominates);
    if !response.status.is_informational() {
        held &= !CONNECTION_HELD;
    }
    for name in chosen(&HOP_BY_HOP, held).chain(&nominated) {
        response.remove_header(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http11_needs_exactly_one_host() {
        let problem = |req: &RequestHeader| {
            let hosts = crate::classify::HeaderFacts::of(req).hosts;
            host_problem(req.version, hosts)
        };
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        assert_eq!(problem(&req), Some(Canned::NoHost));
        req.insert_header("host", "a").unwrap();
        assert!(problem(&req).is_none());
        req.append_header("host", "b").unwrap();
        assert_eq!(problem(&req), Some(Canned::TwoHosts));
        let mut old = RequestHeader::build("GET", b"/", None).unwrap();
        old.set_version(http::Version::HTTP_10);
        assert!(problem(&old).is_none());
    }

    #[test]
    fn forwarded_for_appends_and_host_is_copied() {
        let mut req = RequestHeader::build("GET", b"/x", None).unwrap();
        req.insert_header("host", "example.test").unwrap();
        req.insert_header("x-forwarded-for", "10.0.0.1").unwrap();
        add_forwarded(&mut req, Some("127.0.0.1".parse().unwrap()), "http").unwrap();
        assert_eq!(req.headers["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(req.headers["x-forwarded-proto"], "http");
        assert_eq!(req.headers["x-forwarded-host"], "example.test");
    }

    #[test]
    fn forwarded_for_writes_addresses_as_display_does() {
        for ip in [
            "::ffff:192.168.1.1",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "0.0.0.0",
            "9.10.99.100",
            "255.255.255.255",
            "::1",
            "2001:db8::8a2e:370:7334",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(forwarded_for(&[], ip), ip.to_string().into_bytes());
        }
        let ip = "192.168.1.20".parse().unwrap();
        assert_eq!(forwarded_for(&["10.0.0.1"], ip), b"10.0.0.1, 192.168.1.20");
        // Several earlier lines are one list (RFC 9110 §5.3), as nginx joins them.
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("X-Forwarded-For", "10.0.0.1").unwrap();
        req.append_header("X-Forwarded-For", "10.0.0.2, 10.0.0.3")
            .unwrap();
        add_forwarded(&mut req, Some(ip), "http").unwrap();
        let lines: Vec<_> = req.headers.get_all("x-forwarded-for").iter().collect();
        assert_eq!(lines, ["10.0.0.1, 10.0.0.2, 10.0.0.3, 192.168.1.20"]);
        // A blank or unreadable earlier value is replaced, not appended to.
        for previous in [&b"  "[..], b"\xff\xfe"] {
            let mut req = RequestHeader::build("GET", b"/", None).unwrap();
            req.insert_header("X-Forwarded-For", previous).unwrap();
            add_forwarded(&mut req, Some(ip), "https").unwrap();
            assert_eq!(req.headers["x-forwarded-for"], "192.168.1.20");
            assert_eq!(req.headers["x-forwarded-proto"], "https");
            assert_eq!(req.case_header_iter().count(), req.headers.len());
        }
    }

    #[test]
    fn hop_by_hop_and_nominated_response_headers_are_removed() {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.insert_header("connection", "keep-alive, x-secret")
            .unwrap();
        resp.insert_header("keep-alive", "timeout=5").unwrap();
        resp.insert_header("x-secret", "1").unwrap();
        resp.insert_header("content-type", "text/plain").unwrap();
        strip_hop_by_hop(&mut resp);
        // Pingora's servers replace (HTTP/1) or remove (HTTP/2) it.
        assert!(resp.headers.get("connection").is_some());
        assert!(resp.headers.get("keep-alive").is_none());
        assert!(resp.headers.get("x-secret").is_none());
        assert_eq!(resp.headers["content-type"], "text/plain");
    }

    #[test]
    fn a_plain_connection_header_nominates_nothing_and_stays_on_final_answers() {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.insert_header("Connection", "Close").unwrap();
        resp.insert_header("close", "kept: not nominated").unwrap();
        resp.insert_header("trailer", "x-t").unwrap();
        strip_hop_by_hop(&mut resp);
        assert_eq!(resp.headers["connection"], "Close");
        assert_eq!(resp.headers["close"], "kept: not nominated");
        assert!(resp.headers.get("trailer").is_none());
        // Two Connection headers: the second one's names count too.
        resp.append_header("Connection", "x-two").unwrap();
        resp.insert_header("x-two", "2").unwrap();
        strip_hop_by_hop(&mut resp);
        assert!(resp.headers.get("x-two").is_none());
        // An informational answer is not rewritten by Pingora: hothot
        // removes its Connection itself.
        let mut early = ResponseHeader::build(103, None).unwrap();
        early.insert_header("connection", "keep-alive").unwrap();
        early
            .insert_header("link", "</a.css>; rel=preload")
            .unwrap();
        strip_hop_by_hop(&mut early);
        assert!(early.headers.get("connection").is_none());
        assert_eq!(early.case_header_iter().count(), early.headers.len());
    }

    #[test]
    fn nominated_names_are_matched_whatever_their_case() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("Connection", "Keep-Alive, X-Hop ,close,")
            .unwrap();
        req.insert_header("X-Hop", "1").unwrap();
        req.insert_header("Proxy-Authorization", "secret").unwrap();
        req.insert_header("Accept", "*/*").unwrap();
        strip_hop_by_hop_request(&mut req);
        assert!(req.headers.get("x-hop").is_none());
        assert!(req.headers.get("connection").is_none());
        assert!(req.headers.get("proxy-authorization").is_none());
        assert_eq!(req.headers["accept"], "*/*");
        // The case map Pingora writes from agrees with the header map.
        assert_eq!(req.case_header_iter().count(), req.headers.len());
    }
}
