//! Logging: tracing to stderr, filtered by `RUST_LOG` or `log.level`, as text or JSON.
//!
//! Lines go through a background writer, so a request never waits on a slow stderr (tusk logs
//! one line per request). Keep the returned guard alive: dropping it flushes what is queued.
//!
//! The writer thread buffers: it writes whatever lines are queued in one `write` and flushes
//! when the queue is empty, so a busy server makes one syscall per batch of lines instead of
//! one per request, and an idle one still shows each line at once.
//!
//! Text logs piped to a file or a collector use [`PlainFormat`], the same layout as
//! tracing-subscriber's default format without its cost: the default formats a full
//! date-time and passes every part through the colour-code writer (off or not) for each line,
//! which was a tenth of what a HEAD cost (callgrind, see the commit that added this).

use std::cell::RefCell;
use std::fmt;
use std::io::{BufWriter, IsTerminal};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// How much the log writer thread gathers before it writes (it also writes whenever its
/// queue runs dry).
const LOG_BUFFER: usize = 64 * 1024;

/// Install the global subscriber. `RUST_LOG` wins over `log.level` when set.
pub fn init(settings: &LogSettings) -> WorkerGuard {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let to_terminal = std::io::stderr().is_terminal();
    let (writer, guard) =
        tracing_appender::non_blocking(BufWriter::with_capacity(LOG_BUFFER, std::io::stderr()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let _ = match settings.format {
        // Colour codes only for people; logs piped to files and collectors stay plain.
        LogFormat::Human if to_terminal => builder.with_ansi(true).try_init(),
        LogFormat::Human => builder
            .with_ansi(false)
            .fmt_fields(PlainFields)
            .event_format(PlainFormat)
            .try_init(),
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
    };
    guard
}

/// One line per event, as tracing-subscriber's default text format prints it without colour:
/// `2026-12-02T05:36:44.483007Z  INFO request{method=HEAD path=/files/x}: tusk::routes: request status=200 ms=0`.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlainFormat;

impl<S> FormatEvent<S, PlainFields> for PlainFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, PlainFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write_timestamp(&mut writer, SystemTime::now())?;
        writer.write_str(level_label(*event.metadata().level()))?;
        if let Some(scope) = ctx.event_scope() {
            let mut any = false;
            for span in scope.from_root() {
                writer.write_str(span.name())?;
                if let Some(fields) = span.extensions().get::<FormattedFields<PlainFields>>() {
                    if !fields.is_empty() {
                        writer.write_char('{')?;
                        writer.write_str(fields)?;
                        writer.write_char('}')?;
                    }
                }
                writer.write_char(':')?;
                any = true;
            }
            if any {
                writer.write_char(' ')?;
            }
        }
        writer.write_str(event.metadata().target())?;
        writer.write_str(": ")?;
        ctx.format_fields(writer.by_ref(), event)?;
        writer.write_char('\n')
    }
}

/// Fields as the default format writes them without colour: `name=value` separated by
/// spaces, Display values bare, strings and Debug values as Debug prints them, the message
/// without its name. (The default writer passes each name and `=` through the colour-code
/// writer, off or not.)
#[derive(Debug, Clone, Copy, Default)]
pub struct PlainFields;

impl<'writer> FormatFields<'writer> for PlainFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = PlainVisitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct PlainVisitor<'writer> {
    writer: Writer<'writer>,
    first: bool,
    result: fmt::Result,
}

impl PlainVisitor<'_> {
    fn write(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        if self.result.is_err() {
            return;
        }
        let separator = if self.first { "" } else { " " };
        self.first = false;
        let name = field.name();
        self.result = if name == "message" {
            self.writer.write_fmt(format_args!("{separator}{value}"))
        } else {
            let name = name.strip_prefix("r#").unwrap_or(name);
            self.writer
                .write_fmt(format_args!("{separator}{name}={value}"))
        };
    }
}

impl Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.write(field, format_args!("{value}"));
        } else {
            self.write(field, format_args!("{value:?}"));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field, format_args!("{value:?}"));
    }
}

/// The level as the default format prints it: right-aligned in five columns, between spaces.
fn level_label(level: Level) -> &'static str {
    match level {
        Level::TRACE => " TRACE ",
        Level::DEBUG => " DEBUG ",
        Level::INFO => "  INFO ",
        Level::WARN => "  WARN ",
        Level::ERROR => " ERROR ",
    }
}

thread_local! {
    /// The `YYYY-MM-DDTHH:MM:SS` of the last second this thread logged in.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// RFC 3339 in UTC with microseconds, `2026-12-02T05:36:44.483007Z`; the date and time of
/// day are formatted once per second per thread.
fn write_timestamp(writer: &mut impl fmt::Write, now: SystemTime) -> fmt::Result {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            let (year, month, day) = civil_date(secs / 86_400);
            let of_day = secs % 86_400;
            cached.1.clear();
            fmt::Write::write_fmt(
                &mut cached.1,
                format_args!(
                    "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
                    of_day / 3600,
                    of_day / 60 % 60,
                    of_day % 60
                ),
            )?;
            cached.0 = secs;
        }
        writer.write_str(&cached.1)
    })?;
    let micros = since.subsec_micros();
    let mut digits = [b'.', b'0', b'0', b'0', b'0', b'0', b'0', b'Z'];
    let mut rest = micros;
    for slot in digits[1..7].iter_mut().rev() {
        *slot = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    writer.write_str(std::str::from_utf8(&digits).map_err(|_| fmt::Error)?)
}

/// (year, month, day) of the `days`-th day after 1970-01-01 in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`, for non-negative days).
fn civil_date(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn stamp(unix_micros: u64) -> String {
        let mut out = String::new();
        write_timestamp(&mut out, UNIX_EPOCH + Duration::from_micros(unix_micros)).unwrap();
        out
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        assert_eq!(stamp(0), "1970-01-01T00:00:00.000000Z");
        // `date -u -d @1764653804` = 2025-12-02 05:36:44
        assert_eq!(stamp(1_764_653_804_483_007), "2025-12-02T05:36:44.483007Z");
        // A leap day, and the last microsecond of a year.
        assert_eq!(stamp(951_782_400_000_001), "2000-02-29T00:00:00.000001Z");
        assert_eq!(stamp(1_735_689_599_999_999), "2024-12-31T23:59:59.999999Z");
        // The cached second is replaced when the second changes, in either direction.
        assert_eq!(stamp(1_735_689_600_000_000), "2025-01-01T00:00:00.000000Z");
        assert_eq!(stamp(1_735_689_599_000_000), "2024-12-31T23:59:59.000000Z");
    }

    #[test]
    fn civil_dates_match_every_day_of_four_centuries() {
        // Walk day by day from 1970 and compare with a plain calendar count.
        let (mut year, mut month, mut day) = (1970u64, 1u64, 1u64);
        let days_in = |y: u64, m: u64| match m {
            2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        for days in 0..146_097 {
            assert_eq!(civil_date(days), (year, month, day), "day {days}");
            day += 1;
            if day > days_in(year, month) {
                day = 1;
                month += 1;
                if month > 12 {
                    month = 1;
                    year += 1;
                }
            }
        }
    }
}
