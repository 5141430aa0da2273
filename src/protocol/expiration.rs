//! §Expiration: unfinished uploads expire `expiration.expire_after` after their creation or
//! last PATCH, and say so in `Upload-Expires` (RFC 9110 date). Finished uploads do not expire.
//! Expired uploads answer 410 until the sweeper ([`crate::session::expiry`]) deletes them,
//! then 404.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use warp::reply::Response;

use super::{headers, set_header, UPLOAD_EXPIRES};
use crate::state::AppState;
use crate::upload::UploadInfo;

/// When an upload touched now should expire, given whether it is finished.
pub fn deadline(state: &AppState, finished: bool) -> Option<u64> {
    (!finished).then(|| deadline_after(SystemTime::now(), state.settings.expiration.expire_after.0))
}

/// The whole second, since the epoch, at or after `now + ttl`. Records and `Upload-Expires`
/// hold whole seconds, and an upload is expired once the clock's second reaches its deadline:
/// rounding `now` down instead would let an upload touched at 5.999 s with a 1 s `ttl` expire
/// at 6.0 s, 1 ms later.
fn deadline_after(now: SystemTime, ttl: Duration) -> u64 {
    let exact = now.duration_since(UNIX_EPOCH).unwrap_or_default() + ttl;
    exact.as_secs() + u64::from(exact.subsec_nanos() > 0)
}

/// Restart the expiry clock of `info` after activity.
pub fn renew(state: &AppState, info: &mut UploadInfo) {
    info.expires_at = deadline(state, info.is_finished());
}

/// Add `Upload-Expires` when the upload can expire.
pub fn describe(info: &UploadInfo, response: &mut Response) {
    if let Some(at) = info.expires_at {
        set_header(response, UPLOAD_EXPIRES, headers::http_date(at));
    }
}

/// Push the expiry of an upload whose connection was lost with a server address out to at
/// least `expiration.network_change_grace` from now.
pub fn grant_grace(state: &AppState, info: &mut UploadInfo) {
    if let Some(at) = info.expires_at {
        let grace = state.settings.expiration.network_change_grace.0;
        info.expires_at = Some(at.max(deadline_after(SystemTime::now(), grace)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_is_never_less_than_its_ttl_away() {
        let at = |secs: u64, millis: u64| UNIX_EPOCH + Duration::from_millis(secs * 1000 + millis);
        // Touched late in second 5: a 1 s ttl ends in second 7, not at 6.0 (1 ms later).
        assert_eq!(deadline_after(at(5, 999), Duration::from_secs(1)), 7);
        // On a whole second the deadline is exact.
        assert_eq!(deadline_after(at(5, 0), Duration::from_secs(1)), 6);
        assert_eq!(deadline_after(at(5, 0), Duration::from_millis(500)), 6);
        assert_eq!(deadline_after(at(5, 600), Duration::from_millis(500)), 7);
    }
}
