//! Property test: a file uploaded in any random chunking reassembles exactly.
//!
//! Every case draws, from one seed, a file (0 bytes to 3 MiB) and a plan for uploading it:
//! chunks of 1 byte to 1 MiB, each sent as a PATCH with `Content-Length` or with chunked
//! transfer encoding, sometimes as the body of the creating POST (creation-with-upload),
//! sometimes with a correct `Upload-Checksum: sha256 ...` (as a header or a trailer),
//! sometimes an empty PATCH, sometimes retried (the retry is at a stale offset and must get
//! 409 and change nothing), and sometimes with the length deferred and declared by a later
//! PATCH. After every request `HEAD` must report exactly the bytes sent so far; at the end
//! `GET` must return the file byte for byte (compared by sha256).
//!
//! Environment:
//! * `TUSK_PROPTEST_SEED=<n>` (decimal or `0x` hex) replays the one case with that seed;
//!   every case prints its seed, and a failure names it.
//! * `TUSK_PROPTEST_CASES=<n>` runs `n` cases (default 40). With the default, no new case is
//!   started after 30 s, so the test stays short on a slow machine.
//! * `TUSK_URL` runs against an external server, as for the rest of the suite.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use protocol_tests::*;
use sha2::{Digest, Sha256};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
/// Largest file of a case.
const MAX_FILE: u64 = 3 * MIB;
/// Largest chunk (one request body).
const MAX_CHUNK: u64 = MIB;
/// PATCHes of a case after which the remaining chunks are all of the largest size.
const MAX_PATCHES: usize = 300;
/// Cases run when `TUSK_PROPTEST_CASES` is not set.
const DEFAULT_CASES: u64 = 40;
/// With the default case count, no case starts after this much time.
const DEFAULT_BUDGET: Duration = Duration::from_secs(30);

/// xorshift64* seeded through SplitMix64 (so that nearby seeds give unrelated streams).
#[derive(Debug, Clone)]
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> XorShift {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // The all-zero state is a fixed point of xorshift.
        XorShift(if z == 0 { 0x2545_F491_4F6C_DD1D } else { z })
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..=hi` (the modulo bias is irrelevant here).
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(lo <= hi, "empty range {lo}..={hi}");
        match (hi - lo).checked_add(1) {
            Some(span) => lo + self.next_u64() % span,
            None => self.next_u64(),
        }
    }

    /// True with probability `num / den`.
    fn chance(&mut self, num: u64, den: u64) -> bool {
        self.range(1, den) <= num
    }

    /// Roughly log-uniform in `1..=max`: as likely to be 1-15 as 16-255 or 64Ki-1Mi.
    fn log_size(&mut self, max: u64) -> u64 {
        let bits = 64 - max.leading_zeros();
        let b = self.range(0, u64::from(bits));
        let hi = if b >= 64 { u64::MAX } else { (1u64 << b) - 1 };
        self.range(1, hi.clamp(1, max))
    }
}

/// How one request carries its body.
#[derive(Debug, Clone)]
enum Framing {
    /// `Content-Length`.
    Length,
    /// `Transfer-Encoding: chunked`, split into pieces of these sizes (summing to the chunk).
    Chunked(Vec<usize>),
}

/// How a checksum is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChecksumMode {
    None,
    Header,
    /// Only with chunked framing.
    Trailer,
}

/// One request that carries upload data (the creating POST or a PATCH).
#[derive(Debug, Clone)]
struct Step {
    /// Byte range of the file this request carries (may be empty).
    start: usize,
    end: usize,
    framing: Framing,
    checksum: ChecksumMode,
    /// Carries `Upload-Length` (deferred uploads only).
    declares_length: bool,
    /// Sent a second time after it succeeds (non-empty PATCHes only).
    retried: bool,
}

/// Everything a case does, drawn up front from its seed.
#[derive(Debug)]
struct Plan {
    len: usize,
    /// The creating POST carries `Upload-Defer-Length: 1` instead of `Upload-Length`.
    deferred: bool,
    /// Data of the creating POST (creation-with-upload), if any.
    post: Option<Step>,
    patches: Vec<Step>,
}

impl Plan {
    fn draw(rng: &mut XorShift) -> Plan {
        let len = match rng.range(0, 15) {
            0 => 0,
            1..=3 => rng.range(1, 64),
            4..=7 => rng.range(65, 64 * KIB),
            _ => rng.range(64 * KIB + 1, MAX_FILE),
        };
        let len = usize::try_from(len).expect("file size fits usize");
        let deferred = rng.chance(1, 4);
        // Chunk sizes for this case: mostly log-uniform up to a per-case scale, with some
        // tiny chunks mixed in; the scale keeps the request count of big files moderate.
        let scale = rng
            .log_size(MAX_CHUNK)
            .max((len as u64 / 48).min(MAX_CHUNK));
        let next_size = |rng: &mut XorShift| -> usize {
            let size = if rng.chance(1, 8) {
                rng.range(1, 16)
            } else {
                rng.log_size(scale)
            };
            usize::try_from(size).expect("chunk size fits usize")
        };

        let mut pos = 0;
        let post = if rng.chance(1, 4) {
            let size = if rng.chance(1, 6) {
                0
            } else {
                next_size(rng).min(len)
            };
            let step = Step::draw(rng, pos, pos + size, false);
            pos += size;
            Some(step)
        } else {
            None
        };
        let mut patches = Vec::new();
        while pos < len {
            if rng.chance(1, 10) {
                patches.push(Step::draw(rng, pos, pos, false));
            }
            // Past a few hundred requests, finish with the largest chunks so one case stays
            // within a few seconds.
            let size = if patches.len() < MAX_PATCHES {
                next_size(rng)
            } else {
                MAX_CHUNK as usize
            };
            let size = size.min(len - pos);
            let retried = rng.chance(1, 6);
            patches.push(Step::draw(rng, pos, pos + size, retried));
            pos += size;
        }
        // A deferred length must be declared by some PATCH, and an upload of nothing may
        // still get an empty PATCH now and then.
        if patches.is_empty() && (deferred || rng.chance(1, 3)) {
            patches.push(Step::draw(rng, pos, pos, false));
        }
        if deferred {
            let k = rng.range(0, patches.len() as u64 - 1) as usize;
            patches[k].declares_length = true;
        }
        Plan {
            len,
            deferred,
            post,
            patches,
        }
    }

    fn summary(&self) -> String {
        let requests = self.patches.len() + self.patches.iter().filter(|s| s.retried).count();
        let mut s = format!(
            "{} bytes, {} PATCHes ({} requests with retries)",
            self.len,
            self.patches.len(),
            requests
        );
        if let Some(post) = &self.post {
            s.push_str(&format!(", {} bytes in the POST", post.end - post.start));
        }
        if self.deferred {
            let k = self.patches.iter().position(|p| p.declares_length);
            s.push_str(&format!(
                ", length deferred until PATCH #{}",
                k.unwrap_or(0)
            ));
        }
        s
    }
}

impl Step {
    fn draw(rng: &mut XorShift, start: usize, end: usize, retried: bool) -> Step {
        let size = end - start;
        let framing = if rng.chance(1, 2) {
            Framing::Length
        } else {
            let pieces = rng.range(1, 6) as usize;
            let mut sizes = Vec::with_capacity(pieces);
            let mut left = size;
            for _ in 1..pieces {
                let piece = rng.range(0, left as u64) as usize;
                sizes.push(piece);
                left -= piece;
            }
            sizes.push(left);
            Framing::Chunked(sizes)
        };
        let checksum = match rng.range(0, 5) {
            0 | 1 => ChecksumMode::Header,
            2 if matches!(framing, Framing::Chunked(_)) => ChecksumMode::Trailer,
            _ => ChecksumMode::None,
        };
        Step {
            start,
            end,
            framing,
            checksum,
            declares_length: false,
            retried,
        }
    }

    fn describe(&self) -> String {
        let framing = match &self.framing {
            Framing::Length => "Content-Length".to_string(),
            Framing::Chunked(pieces) => format!("chunked {pieces:?}"),
        };
        format!(
            "bytes {}..{} ({framing}, checksum {:?}{}{})",
            self.start,
            self.end,
            self.checksum,
            if self.declares_length {
                ", declares length"
            } else {
                ""
            },
            if self.retried { ", retried" } else { "" }
        )
    }

    /// Adds this step's body, checksum and framing headers to `req`.
    fn apply(&self, mut req: Request, file: &[u8]) -> Request {
        let data = &file[self.start..self.end];
        req = req.header("Content-Type", "application/offset+octet-stream");
        let checksum = format!("sha256 {}", b64(Sha256::digest(data)));
        if self.checksum == ChecksumMode::Header {
            req = req.header("Upload-Checksum", &checksum);
        }
        match &self.framing {
            Framing::Length => req.body(data.to_vec()),
            Framing::Chunked(sizes) => {
                let mut pieces = Vec::with_capacity(sizes.len());
                let mut at = 0;
                for &size in sizes {
                    pieces.push(data[at..at + size].to_vec());
                    at += size;
                }
                assert_eq!(at, data.len(), "piece sizes must cover the chunk");
                let mut trailers = Vec::new();
                if self.checksum == ChecksumMode::Trailer {
                    req = req.header("Trailer", "Upload-Checksum");
                    trailers.push(("Upload-Checksum".to_string(), checksum));
                }
                req.chunked(pieces, trailers)
            }
        }
    }
}

/// Asserts what `HEAD` says about the upload: its offset, and its length or deferral.
#[track_caller]
fn assert_head(url: &str, offset: usize, length: Option<usize>, what: &str) {
    let r = head(url);
    assert_status(&r, &[200, 204], what);
    assert_eq!(
        r.header_u64("Upload-Offset"),
        offset as u64,
        "{what}: HEAD Upload-Offset\n{}",
        r.describe()
    );
    match length {
        Some(length) => {
            assert_eq!(
                r.header_u64("Upload-Length"),
                length as u64,
                "{what}: HEAD Upload-Length\n{}",
                r.describe()
            );
            assert!(
                !r.has("Upload-Defer-Length"),
                "{what}: Upload-Defer-Length after the length is known\n{}",
                r.describe()
            );
        }
        None => {
            assert_eq!(
                r.header("Upload-Defer-Length"),
                Some("1"),
                "{what}: deferred upload without Upload-Defer-Length: 1\n{}",
                r.describe()
            );
            assert!(
                !r.has("Upload-Length"),
                "{what}: Upload-Length before it was declared\n{}",
                r.describe()
            );
        }
    }
}

/// Runs one case against `server`; returns the size of its file.
fn run_case(server: &TestServer, seed: u64) -> usize {
    let mut rng = XorShift::new(seed);
    let plan = Plan::draw(&mut rng);
    println!("  plan: {}", plan.summary());
    let file = pattern(seed, plan.len);
    let len_text = plan.len.to_string();
    let mut known_length = (!plan.deferred).then_some(plan.len);

    // Create the upload, with its first chunk when the plan says so.
    let mut post = tus("POST", server.endpoint());
    post = if plan.deferred {
        post.header("Upload-Defer-Length", "1")
    } else {
        post.header("Upload-Length", &len_text)
    };
    let mut sent = 0;
    if let Some(step) = &plan.post {
        post = step.apply(post, &file);
    }
    let what = match &plan.post {
        Some(step) => format!("creating the upload with {}", step.describe()),
        None => "creating the upload".to_string(),
    };
    let r = post.send();
    assert_status(&r, &[201], &what);
    let url = server.url(
        r.header("Location")
            .unwrap_or_else(|| panic!("201 without Location: {}", r.describe())),
    );
    if let Some(step) = &plan.post {
        assert_eq!(
            r.header_u64("Upload-Offset"),
            step.end as u64,
            "{what}: response Upload-Offset\n{}",
            r.describe()
        );
        sent = step.end;
    }
    assert_head(&url, sent, known_length, "after the POST");

    for (i, step) in plan.patches.iter().enumerate() {
        assert_eq!(step.start, sent, "the plan is contiguous");
        let mut req = tus("PATCH", &url).header("Upload-Offset", &sent.to_string());
        if step.declares_length {
            req = req.header("Upload-Length", &len_text);
        }
        let req = step.apply(req, &file);
        let what = format!("PATCH #{i} of {}", step.describe());
        let r = req.send();
        assert_status(&r, &[204], &what);
        assert_eq!(
            r.header_u64("Upload-Offset"),
            step.end as u64,
            "{what}: response Upload-Offset\n{}",
            r.describe()
        );
        sent = step.end;
        if step.declares_length {
            known_length = Some(plan.len);
        }
        assert_head(&url, sent, known_length, &format!("after {what}"));

        if step.retried {
            // The same request again, as a client would resend a chunk whose response it
            // lost: its Upload-Offset is now stale.
            let what = format!("retry of PATCH #{i}");
            let r = req.send();
            assert_status(&r, &[409], &what);
            assert_head(&url, sent, known_length, &format!("after the {what}"));
        }
    }

    assert_eq!(sent, plan.len, "the plan covers the file");
    assert_head(&url, plan.len, Some(plan.len), "after the last PATCH");
    let (r, count, digest) = get_sha256(&url);
    assert_status(&r, &[200], "GET of the finished upload");
    assert_eq!(count, plan.len as u64, "GET returned a different length");
    assert_eq!(
        digest,
        sha256_hex(&file),
        "GET returned different bytes ({} bytes)",
        plan.len
    );

    // Free the space; termination is part of the server's feature set.
    let r = tus("DELETE", &url).send();
    assert_status(&r, &[204], "DELETE of the finished upload");
    plan.len
}

fn parse_seed(text: &str) -> u64 {
    let text = text.trim();
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.unwrap_or_else(|_| panic!("TUSK_PROPTEST_SEED={text:?} is not a u64"))
}

#[test]
fn random_chunkings_reassemble_exactly() {
    let replay = std::env::var("TUSK_PROPTEST_SEED")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .map(|s| parse_seed(&s));
    let cases_env = std::env::var("TUSK_PROPTEST_CASES")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("TUSK_PROPTEST_CASES={s:?} is not a number"))
        });
    let (cases, budget) = match (replay, cases_env) {
        (Some(_), _) => (1, None),
        (None, Some(n)) => (n, None),
        (None, None) => (DEFAULT_CASES, Some(DEFAULT_BUDGET)),
    };
    let base = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut seeds = XorShift::new(base);

    let server = TestServer::spawn();
    let started = Instant::now();
    let mut ran = 0;
    let mut bytes = 0u64;
    for case in 0..cases {
        if budget.is_some_and(|b| started.elapsed() >= b) {
            println!("time budget reached: stopping after {ran} of {cases} cases");
            break;
        }
        let seed = replay.unwrap_or_else(|| seeds.next_u64());
        println!("case {}/{cases}: TUSK_PROPTEST_SEED={seed:#x}", case + 1);
        match catch_unwind(AssertUnwindSafe(|| run_case(&server, seed))) {
            Ok(len) => bytes += len as u64,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(non-text panic)");
                panic!(
                    "case {} failed; replay it with TUSK_PROPTEST_SEED={seed:#x}\n{message}",
                    case + 1
                );
            }
        }
        ran += 1;
    }
    println!(
        "{ran} cases, {:.1} MiB uploaded, in {:.1} s",
        bytes as f64 / MIB as f64,
        started.elapsed().as_secs_f64()
    );
    assert!(ran > 0, "no case ran");
}
