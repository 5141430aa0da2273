//! Subcommands that work on a data directory while the server is stopped:
//! `tusk check`, `tusk recover`, `tusk uploads list`, `tusk uploads purge`.
//!
//! sled allows one process per database, so these refuse (with a clear message) to run while
//! a server holds the data directory.

use std::io::Write;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::auth::jwt::Claims;
use crate::auth::SECRET_ENV;
use crate::config::{HumanDuration, Settings};
use crate::session::{SessionStore, SledSessionStore};
use crate::storage::fs::FsBlobStore;
use crate::storage::BlobStore;
use crate::upload::{unix_now, UploadInfo};

/// Which uploads a listing or purge is about.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only uploads in this lifecycle state (`initiated`, `uploading`, `interrupted`,
    /// `completed`, `expired`).
    pub state: Option<String>,
    /// Only uploads created at least this long ago ("7d", "12h").
    pub older_than: Option<String>,
}

impl Filter {
    fn matcher(&self) -> Result<impl Fn(&UploadInfo) -> bool + '_, String> {
        let age = self
            .older_than
            .as_deref()
            .map(HumanDuration::parse)
            .transpose()
            .map_err(|e| format!("--older-than: {e}"))?
            .map(|d| d.0.as_secs());
        let now = unix_now();
        Ok(move |info: &UploadInfo| {
            self.state
                .as_deref()
                .is_none_or(|s| info.lifecycle(now) == s)
                && age.is_none_or(|a| info.created_at + a <= now)
        })
    }
}

fn open_stores(settings: &Settings) -> Result<(SledSessionStore, FsBlobStore), String> {
    let dir = &settings.storage.data_dir;
    let sessions = SledSessionStore::open(&dir.join("db"), settings.storage.durability)
        .map_err(|e| {
            format!(
                "cannot open {}: {e} (is a tusk server running on this data directory? stop it first)",
                dir.join("db").display()
            )
        })?;
    let blobs = FsBlobStore::open(&dir.join("uploads"))
        .map_err(|e| e.to_string())?
        .syncing_directories(settings.storage.durability == crate::config::Durability::Fsync);
    Ok((sessions, blobs))
}

/// The stores with whatever a crashed server left in its commit journal applied, so that
/// offline listings see acknowledged offsets and a purge is not undone by the next start.
async fn open_replayed_stores(
    settings: &Settings,
) -> Result<(SledSessionStore, FsBlobStore), String> {
    let (sessions, blobs) = open_stores(settings)?;
    crate::transfer::journal::replay(
        &crate::transfer::journal::journal_dir(settings),
        &sessions,
        &blobs,
    )
    .await
    .map_err(|e| format!("cannot replay the commit journal: {e}"))?;
    Ok((sessions, blobs))
}

/// `tusk check`: the configuration is valid (loading it already proved that), the secrets and
/// TLS files it names can be read and used, and the data directory opens and would start: no
/// server holds it, and its session database has every record its files say it should.
///
/// # Errors
/// When anything start-up would refuse is found; the message says what and what to do.
pub async fn check(settings: &Settings) -> Result<String, String> {
    crate::state::read_admin_token(settings).map_err(|e| e.to_string())?;
    crate::auth::Authority::new(&settings.auth, std::env::var(SECRET_ENV).ok())
        .map_err(|e| e.to_string())?;
    crate::tls::TlsFiles::load(&settings.tls).map_err(|e| e.to_string())?;
    let dir = &settings.storage.data_dir;
    let note = if settings.storage.backend != crate::config::Backend::Local {
        "shared backend: the data directory is not used".to_owned()
    } else if dir.join("db").exists() {
        let (sessions, blobs) = open_replayed_stores(settings).await?;
        let survey = crate::recovery::survey(&sessions, &blobs)
            .await
            .map_err(|e| e.to_string())?;
        crate::recovery::verdict(&survey, settings.storage.durability)
            .map_err(|e| e.to_string())?;
        format!(
            "data directory opens: {} upload(s), {} file(s) without a record to quarantine",
            survey.records.len(),
            survey.unclaimed.len()
        )
    } else {
        "data directory will be created on first start".to_owned()
    };
    Ok(format!(
        "configuration ok: listening on {}:{}{}, data in {} ({note})",
        settings.server.host,
        settings.server.port,
        settings.server.base_path,
        dir.display()
    ))
}

/// `tusk recover`: rebuild the records the session database lost from the copies kept beside
/// the bytes (also for files in quarantine), then repair the data directory as start-up does.
/// Returns a report: what was rebuilt, and which files could not be (no copy of their record).
///
/// # Errors
/// When the data directory cannot be opened (a server holds it) or a store fails.
pub async fn recover(settings: &Settings) -> Result<String, String> {
    let (sessions, blobs) = open_replayed_stores(settings).await?;
    let report = crate::recovery::recover(&sessions, &blobs)
        .await
        .map_err(|e| e.to_string())?;
    let mut text = format!(
        "rebuilt {} record(s) from their copies; {} upload(s) marked lost, {} file(s) cut back to their offset, {} offset(s) lowered, {} file(s) without a record in quarantine",
        report.rebuilt.len(),
        report.repairs.lost,
        report.repairs.cut,
        report.repairs.lowered,
        report.repairs.quarantined,
    );
    for id in &report.rebuilt {
        text.push_str(&format!("\nrebuilt {id}"));
    }
    if !report.unrecoverable.is_empty() {
        text.push_str(&format!(
            "\n{} file(s) have no copy of their record and could not be rebuilt; they are in {}:",
            report.unrecoverable.len(),
            blobs.quarantine_dir().display()
        ));
        for id in &report.unrecoverable {
            text.push_str(&format!("\nnot recovered {id}"));
        }
    }
    Ok(text)
}

/// What `tusk token` puts in a token besides its owner.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    /// The owner (`sub`).
    pub sub: String,
    /// Lifetime.
    pub ttl: Duration,
    /// `max_size` claim.
    pub max_size: Option<u64>,
    /// `max_uploads` claim (per hour).
    pub max_uploads: Option<u32>,
    /// `filetypes` claim.
    pub filetypes: Vec<String>,
}

/// `tusk token`: an HS256 token signed with the first key of `secret_file` (or, without
/// one, of `auth.secret_file` / `TUSK_AUTH_SECRET`).
///
/// # Errors
/// No keys, unreadable keys, or an empty subject.
pub fn mint_token(
    settings: &Settings,
    secret_file: Option<&std::path::Path>,
    request: &TokenRequest,
) -> Result<String, String> {
    let file = secret_file.unwrap_or(&settings.auth.secret_file);
    let keys = crate::auth::load_keys(file, std::env::var(SECRET_ENV).ok())
        .map_err(|e| e.to_string())?
        .ok_or_else(|| crate::auth::AuthSetupError::NoKeys.to_string())?;
    if request.sub.trim().is_empty() {
        return Err("--sub must name the owner".to_owned());
    }
    let now = unix_now();
    let claims = Claims {
        sub: request.sub.clone(),
        exp: now.saturating_add(request.ttl.as_secs()),
        nbf: None,
        iat: Some(now),
        max_size: request.max_size,
        max_uploads: request.max_uploads,
        filetypes: (!request.filetypes.is_empty()).then(|| request.filetypes.clone()),
    };
    Ok(crate::auth::jwt::sign(&claims, keys.signing_key()))
}

/// The records `filter` selects.
async fn matching(sessions: &SledSessionStore, filter: &Filter) -> Result<Vec<UploadInfo>, String> {
    let matches = filter.matcher()?;
    Ok(sessions
        .all()
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|info| matches(info))
        .collect())
}

/// `tusk uploads list`: one line per upload (or JSON).
pub async fn list(
    settings: &Settings,
    filter: &Filter,
    json: bool,
    out: &mut impl Write,
) -> Result<(), String> {
    let (sessions, _) = open_replayed_stores(settings).await?;
    let now = unix_now();
    let mut uploads = matching(&sessions, filter).await?;
    uploads.sort_by_key(|u| u.created_at);
    let write_err = |e: std::io::Error| e.to_string();
    if json {
        let views: Vec<_> = uploads
            .iter()
            .map(|u| serde_json::json!({ "upload": u, "lifecycle": u.lifecycle(now) }))
            .collect();
        let text = serde_json::to_string_pretty(&views).map_err(|e| e.to_string())?;
        writeln!(out, "{text}").map_err(write_err)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<32}  {:<11}  {:>14}  {:>14}  {:>10}",
        "ID", "STATE", "OFFSET", "LENGTH", "AGE"
    )
    .map_err(write_err)?;
    for u in &uploads {
        let length = u
            .length
            .map_or_else(|| "deferred".to_owned(), |l| l.to_string());
        let age = HumanDuration(Duration::from_secs(now.saturating_sub(u.created_at)));
        writeln!(
            out,
            "{:<32}  {:<11}  {:>14}  {:>14}  {:>10}",
            u.id,
            u.lifecycle(now),
            u.offset,
            length,
            age.to_string()
        )
        .map_err(write_err)?;
    }
    writeln!(out, "{} upload(s)", uploads.len()).map_err(write_err)?;
    Ok(())
}

/// `tusk uploads purge`: delete the matching uploads (data and record), with a progress bar.
/// Returns how many were deleted and how many bytes that freed.
pub async fn purge(
    settings: &Settings,
    filter: &Filter,
    show_progress: bool,
) -> Result<(usize, u64), String> {
    if filter.state.is_none() && filter.older_than.is_none() {
        return Err("say what to purge: --expired, --state STATE or --older-than AGE".to_owned());
    }
    let (sessions, blobs) = open_replayed_stores(settings).await?;
    let doomed = matching(&sessions, filter).await?;
    let bar = if show_progress {
        ProgressBar::new(doomed.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} uploads purged ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut freed = 0;
    for info in &doomed {
        freed += blobs.len(&info.id).await.unwrap_or(0);
        blobs
            .drop_record_copy(&info.id)
            .await
            .map_err(|e| e.to_string())?;
        sessions.remove(&info.id).await.map_err(|e| e.to_string())?;
        blobs.remove(&info.id).await.map_err(|e| e.to_string())?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    sessions.flush().await.map_err(|e| e.to_string())?;
    Ok((doomed.len(), freed))
}
