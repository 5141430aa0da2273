//! Authentication and ownership (issue 5), against the real binary: HS256 bearer tokens,
//! owners, signed download links, per-owner limits, key rotation and `tusk token`.
//!
//! Tokens are minted here with hmac + sha2 directly (not with tusk's own signer), so a bug in
//! tusk's encoder and verifier cannot cancel out; one test uses `tusk token` on purpose.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use protocol_tests::*;
use sha2::Sha256;

const KEY_NEW: &str = "0123456789abcdef0123456789abcdef-new";
const KEY_OLD: &str = "fedcba9876543210fedcba9876543210-old";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A compact JWS with any header and claims, signed HS256 with `secret`.
fn jwt(header: &str, claims: &str, secret: &str) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(input.as_bytes());
    format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

/// A valid token for `sub`, signed with the current key, with extra claims.
fn token_with(sub: &str, extra: &str) -> String {
    jwt(
        r#"{"alg":"HS256","typ":"JWT","kid":"new"}"#,
        &format!(r#"{{"sub":"{sub}","exp":{}{extra}}}"#, now() + 600),
        KEY_NEW,
    )
}

fn token(sub: &str) -> String {
    token_with(sub, "")
}

/// A server in token mode with keys `new` (signing) and `old`, plus `extra` config lines
/// under `[auth]`. The key file lives as long as the returned guard.
fn token_server(extra: &str) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::write(&keys, format!("new {KEY_NEW}\nold {KEY_OLD}\n")).unwrap();
    let server = TestServer::spawn_with_config(&format!(
        "[auth]\nmode = \"token\"\nsecret_file = \"{}\"\n{extra}\n[admin]\nenabled = false\n",
        keys.display()
    ));
    (server, dir)
}

fn with_token(request: Request, token: &str) -> Request {
    request.header("Authorization", &format!("Bearer {token}"))
}

/// Create an upload of `length` bytes as `token`'s owner; returns its URL.
#[track_caller]
fn create(s: &TestServer, token: &str, length: u64) -> String {
    let r = with_token(tus("POST", s.endpoint()), token)
        .header("Upload-Length", &length.to_string())
        .send();
    assert_status(&r, &[201], "POST with a valid token");
    resolve(s.endpoint(), r.header("Location").unwrap())
}

#[track_caller]
fn patch(url: &str, token: &str, offset: u64, body: &[u8]) -> Response {
    with_token(tus("PATCH", url), token)
        .header("Upload-Offset", &offset.to_string())
        .header("Content-Type", "application/offset+octet-stream")
        .body(body.to_vec())
        .send()
}

#[test]
fn auth_open_mode_needs_no_token_and_says_so_loudly() {
    needs_spawned_server!();
    let s = TestServer::spawn_with_config("[auth]\nmode = \"open\"\n");
    let r = tus("POST", s.endpoint())
        .header("Upload-Length", "3")
        .send();
    assert_status(&r, &[201], "POST in open mode");
    let log = s.stderr();
    assert!(
        log.contains("WARN") && log.contains("auth.mode = \"open\""),
        "open mode must be logged loudly at start-up:\n{log}"
    );
}

#[test]
fn auth_every_upload_request_without_a_token_gets_401_with_www_authenticate() {
    needs_spawned_server!();
    let (s, _keys) = token_server("");
    let url = create(&s, &token("alice"), 5);
    for (method, target) in [
        ("POST", s.endpoint().to_owned()),
        ("GET", s.endpoint().to_owned()),
        ("HEAD", url.clone()),
        ("PATCH", url.clone()),
        ("DELETE", url.clone()),
        ("GET", url.clone()),
    ] {
        let r = tus(method, &target)
            .header("Upload-Length", "5")
            .header("Upload-Offset", "0")
            .header("Content-Type", "application/offset+octet-stream")
            .send();
        assert_status(&r, &[401], &format!("{method} {target} without a token"));
        assert_eq!(
            r.header("WWW-Authenticate"),
            Some("Bearer realm=\"tusk\""),
            "{method}: RFC 6750 challenge"
        );
    }
    let head = with_token(tus("HEAD", &url), &token("alice")).send();
    assert_eq!(head.header_u64("Upload-Offset"), 0, "nothing was written");
}

#[test]
fn auth_options_needs_no_token() {
    needs_spawned_server!();
    let (s, _keys) = token_server("");
    let r = Request::new("OPTIONS", s.endpoint())
        .header("Origin", "https://app.example")
        .header("Access-Control-Request-Method", "POST")
        .send();
    assert_status(&r, &[200, 204], "preflight without credentials");
    assert!(r.has("Tus-Version"));
}

#[test]
fn auth_invalid_tokens_are_refused_with_401_and_a_reason() {
    needs_spawned_server!();
    let (s, _keys) = token_server("clock_skew = \"5s\"\n");
    let hs = r#"{"alg":"HS256","typ":"JWT","kid":"new"}"#;
    let live = format!(r#"{{"sub":"alice","exp":{}}}"#, now() + 600);
    let forged = {
        let good = token("alice");
        let parts: Vec<&str> = good.split('.').collect();
        let claims =
            URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"mallory","exp":{}}}"#, now() + 600));
        format!("{}.{claims}.{}", parts[0], parts[2])
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            jwt(
                hs,
                &format!(r#"{{"sub":"alice","exp":{}}}"#, now() - 60),
                KEY_NEW,
            ),
            "expired",
        ),
        (
            "not yet valid",
            jwt(
                hs,
                &format!(
                    r#"{{"sub":"alice","exp":{},"nbf":{}}}"#,
                    now() + 600,
                    now() + 300
                ),
                KEY_NEW,
            ),
            "not yet valid",
        ),
        (
            "wrong key",
            jwt(hs, &live, "another-secret-another-secret-xx"),
            "signature",
        ),
        ("tampered claims", forged, "signature"),
        ("malformed", "not-a-token".to_owned(), "malformed"),
        ("bad base64", "a.b!.c".to_owned(), "malformed"),
        (
            "alg none",
            format!(
                "{}.{}.",
                URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
                URL_SAFE_NO_PAD.encode(&live)
            ),
            "algorithm",
        ),
        (
            "HS512",
            jwt(r#"{"alg":"HS512","kid":"new"}"#, &live, KEY_NEW),
            "algorithm",
        ),
        (
            "RS256",
            jwt(r#"{"alg":"RS256","kid":"new"}"#, &live, KEY_NEW),
            "algorithm",
        ),
        (
            "unknown kid",
            jwt(r#"{"alg":"HS256","kid":"gone"}"#, &live, KEY_NEW),
            "key id",
        ),
        (
            "no subject",
            jwt(hs, &format!(r#"{{"exp":{}}}"#, now() + 600), KEY_NEW),
            "claims",
        ),
        (
            "no expiry",
            jwt(hs, r#"{"sub":"alice"}"#, KEY_NEW),
            "claims",
        ),
    ];
    for (what, bad, reason) in cases {
        let r = with_token(tus("POST", s.endpoint()), &bad)
            .header("Upload-Length", "1")
            .send();
        assert_status(&r, &[401], what);
        assert!(
            r.text().to_lowercase().contains(reason),
            "{what}: the reason should mention {reason:?}, got {:?}",
            r.text()
        );
        let challenge = r.header("WWW-Authenticate").unwrap_or("");
        assert!(
            challenge.contains("error=\"invalid_token\""),
            "{what}: challenge {challenge:?}"
        );
    }
}

#[test]
fn auth_a_token_for_one_owner_never_opens_another_owners_upload() {
    needs_spawned_server!();
    let (s, _keys) = token_server("");
    let (alice, bob) = (token("alice"), token("bob"));
    let url = create(&s, &alice, 6);
    assert_status(&patch(&url, &alice, 0, b"abc"), &[204], "owner PATCH");

    assert_status(
        &with_token(tus("HEAD", &url), &bob).send(),
        &[403],
        "HEAD by another owner",
    );
    assert_status(
        &patch(&url, &bob, 3, b"XYZ"),
        &[403],
        "PATCH by another owner",
    );
    assert_status(
        &with_token(tus("GET", &url), &bob).send(),
        &[403],
        "GET by another owner",
    );
    assert_status(
        &with_token(tus("DELETE", &url), &bob).send(),
        &[403],
        "DELETE by another owner",
    );
    assert_status(
        &with_token(Request::new("POST", &format!("{url}/link")), &bob).send(),
        &[403],
        "link by another owner",
    );

    let head = with_token(tus("HEAD", &url), &alice).send();
    assert_status(&head, &[200], "owner HEAD");
    assert_eq!(head.header_u64("Upload-Offset"), 3, "bob changed nothing");
    assert_status(&patch(&url, &alice, 3, b"def"), &[204], "owner finishes");
    let got = with_token(tus("GET", &url), &alice).send();
    assert_eq!(got.body, b"abcdef");
}

#[test]
fn auth_token_in_query_parameter_works_for_clients_without_headers() {
    needs_spawned_server!();
    let (s, _keys) = token_server("");
    let t = token("carol");
    let r = tus("POST", &format!("{}?token={t}", s.endpoint()))
        .header("Upload-Length", "2")
        .send();
    assert_status(&r, &[201], "POST with ?token=");
    let url = resolve(s.endpoint(), r.header("Location").unwrap());
    let r = tus("PATCH", &format!("{url}?token={t}"))
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/offset+octet-stream")
        .body(b"ok".to_vec())
        .send();
    assert_status(&r, &[204], "PATCH with ?token=");
    let log = s.stderr();
    assert!(!log.contains(&t), "the token must never be logged");
}

#[test]
fn auth_keys_rotate_without_downtime() {
    needs_spawned_server!();
    let (s, _keys) = token_server("");
    let live = format!(r#"{{"sub":"dave","exp":{}}}"#, now() + 600);
    let by_old = jwt(r#"{"alg":"HS256","kid":"old"}"#, &live, KEY_OLD);
    let by_new = jwt(r#"{"alg":"HS256","kid":"new"}"#, &live, KEY_NEW);
    let old_url = create(&s, &by_old, 1);
    // Both tokens name the same owner: the upload made with the old key stays usable.
    assert_status(
        &patch(&old_url, &by_new, 0, b"x"),
        &[204],
        "new key, old upload",
    );
    // A token signed with the old secret but claiming the new kid does not verify.
    let confused = jwt(r#"{"alg":"HS256","kid":"new"}"#, &live, KEY_OLD);
    let r = with_token(tus("POST", s.endpoint()), &confused)
        .header("Upload-Length", "1")
        .send();
    assert_status(&r, &[401], "kid must match the key that signed");

    // After the old key is removed, its tokens stop working.
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::write(&keys, format!("new {KEY_NEW}\n")).unwrap();
    let rotated = TestServer::spawn_with_config(&format!(
        "[auth]\nmode = \"token\"\nsecret_file = \"{}\"\n",
        keys.display()
    ));
    let r = with_token(tus("POST", rotated.endpoint()), &by_old)
        .header("Upload-Length", "1")
        .send();
    assert_status(&r, &[401], "token of a retired key");
}

/// Start `tusk` by hand (for flags and environment the harness does not set); returns the
/// child and its endpoint.
fn spawn_tusk(args: &[&str], env: &[(&str, &str)]) -> (Child, String) {
    let data = tempfile::tempdir().unwrap().keep();
    let mut cmd = Command::new(tusk_bin());
    cmd.args(["--host", "127.0.0.1", "--port", "0", "--data-dir"])
        .arg(&data)
        .args(args)
        .env_remove("TUSK_AUTH_SECRET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (name, value) in env {
        cmd.env(name, value);
    }
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let endpoint = line
        .split_whitespace()
        .last()
        .unwrap_or_else(|| panic!("no start-up line: {line:?}"))
        .to_owned();
    (child, endpoint)
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn auth_tusk_token_mints_what_auth_secret_file_accepts() {
    needs_spawned_server!();
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::write(&keys, format!("{KEY_NEW}\n")).unwrap();
    let keys = keys.to_str().unwrap();
    let minted = Command::new(tusk_bin())
        .args([
            "token",
            "--secret-file",
            keys,
            "--sub",
            "erin",
            "--ttl",
            "10m",
        ])
        .output()
        .unwrap();
    assert!(minted.status.success(), "tusk token: {minted:?}");
    let t = String::from_utf8(minted.stdout).unwrap().trim().to_owned();
    assert_eq!(t.split('.').count(), 3, "a compact JWT: {t}");

    let (child, endpoint) = spawn_tusk(&["--auth-secret-file", keys], &[]);
    let _child = Killed(child);
    let r = tus("POST", &endpoint).header("Upload-Length", "1").send();
    assert_status(&r, &[401], "--auth-secret-file turns token mode on");
    let r = with_token(tus("POST", &endpoint), &t)
        .header("Upload-Length", "1")
        .send();
    assert_status(&r, &[201], "a token from tusk token");

    let missing = Command::new(tusk_bin())
        .args(["token", "--secret-file", "/nonexistent/keys", "--sub", "x"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/keys"));
}

#[test]
fn auth_secrets_from_the_environment_are_never_printed() {
    needs_spawned_server!();
    let (child, endpoint) = spawn_tusk(
        &[],
        &[
            ("TUSK_AUTH__MODE", "token"),
            ("TUSK_AUTH_SECRET", &format!("new {KEY_NEW}")),
        ],
    );
    let _child = Killed(child);
    let r = with_token(tus("POST", &endpoint), &token("frank"))
        .header("Upload-Length", "1")
        .send();
    assert_status(&r, &[201], "keys from TUSK_AUTH_SECRET");
    let printed = Command::new(tusk_bin())
        .args(["--print-config"])
        .env("TUSK_AUTH__MODE", "token")
        .env("TUSK_AUTH_SECRET", KEY_NEW)
        .output()
        .unwrap();
    assert!(printed.status.success());
    let text = String::from_utf8_lossy(&printed.stdout);
    assert!(text.contains("mode = \"token\""), "{text}");
    assert!(
        !text.contains(KEY_NEW),
        "--print-config must not show secrets"
    );

    let no_keys = Command::new(tusk_bin())
        .args(["check"])
        .env("TUSK_AUTH__MODE", "token")
        .env_remove("TUSK_AUTH_SECRET")
        .output()
        .unwrap();
    assert!(
        !no_keys.status.success(),
        "token mode without keys must not start"
    );
    assert!(String::from_utf8_lossy(&no_keys.stderr).contains("secret_file"));
}

#[test]
fn auth_signed_download_links_open_a_finished_upload_until_they_expire() {
    needs_spawned_server!();
    let (s, _keys) = token_server("");
    let alice = token("alice");
    let url = create(&s, &alice, 4);
    let early = with_token(Request::new("POST", &format!("{url}/link")), &alice).send();
    assert_status(&early, &[409], "no link for an unfinished upload");
    assert_status(&patch(&url, &alice, 0, b"data"), &[204], "finish");

    let r = with_token(Request::new("POST", &format!("{url}/link?ttl=60")), &alice).send();
    assert_status(&r, &[201], "link for the owner");
    let body = r.text();
    let link = body
        .split("\"url\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no url in {body}"))
        .to_owned();
    let got = Request::new("GET", &link).send();
    assert_status(&got, &[200], "GET through the link, no token");
    assert_eq!(got.body, b"data");

    let tampered = link.replace("expires=", "expires=9");
    assert_status(
        &Request::new("GET", &tampered).send(),
        &[403],
        "stretched expiry",
    );
    let other = create(&s, &alice, 1);
    let elsewhere = format!("{other}?{}", link.split_once('?').unwrap().1);
    assert_status(
        &Request::new("GET", &elsewhere).send(),
        &[403],
        "link used on another upload",
    );
    assert_status(
        &Request::new("HEAD", &link)
            .header("Tus-Resumable", "1.0.0")
            .send(),
        &[401],
        "a link opens GET only",
    );

    let short = with_token(Request::new("POST", &format!("{url}/link?ttl=1")), &alice).send();
    let short = short.text();
    let short = short
        .split("\"url\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    std::thread::sleep(Duration::from_millis(2100));
    let expired = Request::new("GET", &short).send();
    assert_status(&expired, &[403], "expired link");
    assert!(expired.text().contains("expired"), "{}", expired.text());
}

/// With `server.public_url` set, a signed link is built from it, not from the `Host` the
/// owner's request carried; the link still opens the upload.
#[test]
fn auth_signed_links_use_the_public_url_not_the_host() {
    needs_spawned_server!();
    let (s, _keys) = token_server("[server]\npublic_url = \"https://uploads.example.com\"");
    let alice = token("alice");
    let created = with_token(tus("POST", s.endpoint()), &alice)
        .header("Upload-Length", "4")
        .send();
    assert_status(&created, &[201], "POST");
    let location = created.header("Location").unwrap();
    assert!(
        location.starts_with("https://uploads.example.com/files/"),
        "{location}"
    );
    // Re-rooted onto the test server's real address.
    let url = s.url(location);
    assert_status(&patch(&url, &alice, 0, b"data"), &[204], "finish");
    let r = with_token(Request::new("POST", &format!("{url}/link")), &alice)
        .header("Host", "attacker.example")
        .send();
    assert_status(&r, &[201], "link for the owner");
    let body = r.text();
    let link = body
        .split("\"url\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no url in {body}"))
        .to_owned();
    assert!(
        link.starts_with("https://uploads.example.com/files/"),
        "the link follows server.public_url: {link}"
    );
    let got = Request::new("GET", &s.url(&link)).send();
    assert_status(&got, &[200], "GET through the link");
    assert_eq!(got.body, b"data");
}

/// Owner names that would read as another in logs and the admin API (zero-width, direction
/// overrides and isolates, controls) are refused with 401 and a reason.
#[test]
fn auth_owner_names_with_invisible_characters_are_refused() {
    needs_spawned_server!();
    let (s, _keys) = token_server("");
    for sub in [
        "ali\u{200B}ce",
        "\u{202E}ecila",
        "alice\u{2069}",
        "bob\\u0007",
    ] {
        let r = with_token(tus("POST", s.endpoint()), &token(sub))
            .header("Upload-Length", "1")
            .send();
        assert_status(&r, &[401], &format!("token for {sub:?}"));
        assert!(
            r.text().contains("sub"),
            "the reason names the claim: {}",
            r.describe()
        );
    }
    create(&s, &token("alice"), 1);
}

#[test]
fn auth_only_the_owner_of_partial_uploads_may_concatenate_them() {
    needs_spawned_server!();
    let (s, _keys) = token_server("");
    let (alice, bob) = (token("alice"), token("bob"));
    let part = {
        let r = with_token(tus("POST", s.endpoint()), &alice)
            .header("Upload-Length", "2")
            .header("Upload-Concat", "partial")
            .send();
        assert_status(&r, &[201], "partial");
        resolve(s.endpoint(), r.header("Location").unwrap())
    };
    assert_status(&patch(&part, &alice, 0, b"hi"), &[204], "fill the part");
    let concat = format!("final;{}", path_of(&part));
    let r = with_token(tus("POST", s.endpoint()), &bob)
        .header("Upload-Concat", &concat)
        .send();
    assert_status(&r, &[403], "bob concatenating alice's part");
    let r = with_token(tus("POST", s.endpoint()), &alice)
        .header("Upload-Concat", &concat)
        .send();
    assert_status(&r, &[201], "alice concatenating her own part");
    let fin = resolve(s.endpoint(), r.header("Location").unwrap());
    assert_eq!(with_token(tus("GET", &fin), &alice).send().body, b"hi");
    assert_status(
        &with_token(tus("GET", &fin), &bob).send(),
        &[403],
        "final is alice's",
    );
}

#[test]
fn auth_per_owner_max_size_gives_413() {
    needs_spawned_server!();
    let (s, _keys) = token_server("max_upload_size = 1000\n");
    let r = with_token(tus("POST", s.endpoint()), &token("gina"))
        .header("Upload-Length", "1001")
        .send();
    assert_status(&r, &[413], "over auth.max_upload_size");
    let r = with_token(
        tus("POST", s.endpoint()),
        &token_with("gina", r#","max_size":10"#),
    )
    .header("Upload-Length", "11")
    .send();
    assert_status(&r, &[413], "over the token's max_size");
    // A deferred length is held to the same limit when it is declared.
    let r = with_token(tus("POST", s.endpoint()), &token("gina"))
        .header("Upload-Defer-Length", "1")
        .send();
    assert_status(&r, &[201], "deferred");
    let url = resolve(s.endpoint(), r.header("Location").unwrap());
    let r = with_token(tus("PATCH", &url), &token("gina"))
        .header("Upload-Offset", "0")
        .header("Upload-Length", "5000")
        .header("Content-Type", "application/offset+octet-stream")
        .send();
    assert_status(&r, &[413], "declared length over the owner's limit");
}

/// Issue 23, item 6: a deferred-length upload never carries more than the owner's limit,
/// whether the PATCH announces its size or streams it chunked without ever declaring a length.
#[test]
fn auth_per_owner_max_size_holds_the_bytes_of_a_deferred_upload() {
    needs_spawned_server!();
    let (s, _keys) = token_server("max_upload_size = 1000\n");
    let t = token("gus");
    let r = with_token(tus("POST", s.endpoint()), &t)
        .header("Upload-Defer-Length", "1")
        .send();
    assert_status(&r, &[201], "deferred");
    let url = resolve(s.endpoint(), r.header("Location").unwrap());
    assert_status(
        &patch(&url, &t, 0, &[1u8; 1001]),
        &[413],
        "1001 bytes, deferred",
    );
    let r = with_token(tus("PATCH", &url), &t)
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/offset+octet-stream")
        .chunked(vec![vec![2u8; 64 << 10]; 160], vec![])
        .send();
    assert_status(&r, &[413], "10 MiB chunked into a deferred upload");
    let head = with_token(tus("HEAD", &url), &t).send();
    assert!(
        head.header_u64("Upload-Offset") <= 1000,
        "a deferred upload holds more than the owner's limit: {}",
        head.describe()
    );
    // Up to the limit is fine, and so is declaring it then.
    let at = head.header_u64("Upload-Offset");
    let rest = vec![3u8; (1000 - at) as usize];
    let r = with_token(tus("PATCH", &url), &t)
        .header("Upload-Offset", &at.to_string())
        .header("Upload-Length", "1000")
        .header("Content-Type", "application/offset+octet-stream")
        .body(rest)
        .send();
    assert_status(&r, &[204], "the rest, up to the limit");
    assert_eq!(r.header_u64("Upload-Offset"), 1000);
}

#[test]
fn auth_uploads_per_hour_give_429_with_retry_after() {
    needs_spawned_server!();
    let (s, _keys) = token_server("max_uploads_per_hour = 2\n");
    let t = token("hank");
    create(&s, &t, 1);
    create(&s, &t, 1);
    let r = with_token(tus("POST", s.endpoint()), &t)
        .header("Upload-Length", "1")
        .send();
    assert_status(&r, &[429], "third creation in the hour");
    let retry: u64 = r.header("Retry-After").unwrap_or("0").parse().unwrap();
    assert!((3000..=3600).contains(&retry), "Retry-After {retry}");
    create(&s, &token("ivy"), 1); // other owners are not affected
    let r = with_token(
        tus("POST", s.endpoint()),
        &token_with("hank2", r#","max_uploads":1"#),
    )
    .header("Upload-Length", "1")
    .send();
    assert_status(&r, &[201], "token's own max_uploads");
    let r = with_token(
        tus("POST", s.endpoint()),
        &token_with("hank2", r#","max_uploads":1"#),
    )
    .header("Upload-Length", "1")
    .send();
    assert_status(&r, &[429], "over the token's max_uploads");
}

#[test]
fn auth_bytes_in_flight_per_owner_give_429_until_uploads_finish() {
    needs_spawned_server!();
    let (s, _keys) = token_server("max_bytes_in_flight = 100\n");
    let t = token("jack");
    let first = create(&s, &t, 60);
    let r = with_token(tus("POST", s.endpoint()), &t)
        .header("Upload-Length", "50")
        .send();
    assert_status(&r, &[429], "60 + 50 announced bytes over 100");
    assert!(r.text().contains("in flight"), "{}", r.text());
    create(&s, &token("kim"), 90); // another owner has their own budget
    assert_status(
        &patch(&first, &t, 0, &[7u8; 60]),
        &[204],
        "finish the first",
    );
    create(&s, &t, 50);
}

#[test]
fn auth_token_filetypes_restrict_metadata_filetype() {
    needs_spawned_server!();
    let (s, _keys) = token_server("");
    let t = token_with("lena", r#","filetypes":["image/*"]"#);
    let meta = |filetype: &str| {
        format!(
            "filetype {}",
            base64::engine::general_purpose::STANDARD.encode(filetype)
        )
    };
    let r = with_token(tus("POST", s.endpoint()), &t)
        .header("Upload-Length", "1")
        .header("Upload-Metadata", &meta("image/png"))
        .send();
    assert_status(&r, &[201], "an allowed filetype");
    let r = with_token(tus("POST", s.endpoint()), &t)
        .header("Upload-Length", "1")
        .header("Upload-Metadata", &meta("application/x-msdownload"))
        .send();
    assert_status(&r, &[403], "a filetype the token does not allow");
    let r = with_token(tus("POST", s.endpoint()), &t)
        .header("Upload-Length", "1")
        .send();
    assert_status(&r, &[403], "no filetype when the token restricts them");
}

#[test]
fn auth_owners_list_only_their_own_uploads() {
    needs_spawned_server!();
    let (s, _keys) = token_server("");
    let mine = create(&s, &token("mia"), 3);
    let theirs = create(&s, &token("ned"), 3);
    let r = with_token(Request::new("GET", s.endpoint()), &token("mia")).send();
    assert_status(&r, &[200], "owner listing");
    let body = r.text();
    assert!(body.contains(&upload_id(&mine)), "{body}");
    assert!(!body.contains(&upload_id(&theirs)), "{body}");
}

#[test]
fn auth_draft_requests_follow_the_same_rules() {
    needs_spawned_server!();
    let (s, _keys) = token_server("");
    let draft = |method: &str, url: &str| {
        Request::new(method, url).header("Upload-Draft-Interop-Version", "8")
    };
    let r = draft("POST", s.endpoint())
        .header("Upload-Complete", "?0")
        .send();
    assert_status(&r, &[401], "draft creation without a token");
    let r = with_token(draft("POST", s.endpoint()), &token("olga"))
        .header("Upload-Complete", "?0")
        .send();
    assert_status(&r, &[201], "draft creation with a token");
    let url = resolve(s.endpoint(), r.header("Location").unwrap());
    assert_status(
        &draft("HEAD", &url).send(),
        &[401],
        "draft HEAD without a token",
    );
    assert_status(
        &with_token(draft("HEAD", &url), &token("pete")).send(),
        &[403],
        "draft HEAD by another owner",
    );
    let own = with_token(draft("HEAD", &url), &token("olga")).send();
    assert_status(&own, &[204], "draft HEAD by the owner");
    assert_eq!(own.header_u64("Upload-Offset"), 0);
}
