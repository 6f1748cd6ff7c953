//! Reading response bodies with bounds: never more than the caller's limit in memory, never
//! slower than the minimum throughput for long, every byte counted.

use std::io::Read;
use std::time::Instant;

use crate::registry::Limits;
use crate::registry::error::At;
use crate::registry::stats::Counters;
use crate::registry::transport::{Failure, Response, retry};

/// A body being read, metered.
pub(crate) struct Metered<'a> {
    reader: ureq::BodyReader<'static>,
    started: Instant,
    /// Bytes read so far from this body.
    pub read: u64,
    /// Bytes of the object received before this body (a resumed transfer), for messages.
    pub offset: u64,
    /// What the body should hold, if known (for messages).
    pub expected: Option<u64>,
    server: String,
    limits: &'a Limits,
    counters: &'a Counters,
    at: &'a At,
}

impl<'a> Metered<'a> {
    /// Starts reading `response`'s body.
    pub(crate) fn new(
        response: Response,
        expected: Option<u64>,
        limits: &'a Limits,
        counters: &'a Counters,
        at: &'a At,
    ) -> Self {
        let server = response.server();
        Self {
            reader: response.body.into_reader(),
            started: response.started,
            read: 0,
            offset: 0,
            expected,
            server,
            limits,
            counters,
            at,
        }
    }

    fn progress(&self) -> String {
        let got = self.offset.saturating_add(self.read);
        match self.expected {
            Some(n) => format!("{got} of {n} bytes"),
            None => format!("{got} bytes"),
        }
    }

    /// Reads some bytes (0 at the end of the body).
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> Result<usize, Failure> {
        let n = loop {
            match self.reader.read(buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.read_failure(e)),
            }
        };
        self.read = self.read.saturating_add(n as u64);
        self.counters.bytes(n as u64);
        let elapsed = self.started.elapsed();
        if n > 0 && elapsed > self.limits.throughput_grace {
            let rate = self.read as f64 / elapsed.as_secs_f64();
            if rate < self.limits.min_throughput as f64 {
                return Err(retry(self.at.network(format!(
                    "{} is too slow: {} in {:.1} s ({rate:.0} B/s, below the minimum of {} B/s)",
                    self.server,
                    self.progress(),
                    elapsed.as_secs_f64(),
                    self.limits.min_throughput
                ))));
            }
        }
        Ok(n)
    }

    fn read_failure(&self, e: std::io::Error) -> Failure {
        let timed_out = e.kind() == std::io::ErrorKind::TimedOut
            || e.kind() == std::io::ErrorKind::WouldBlock
            || e.get_ref()
                .and_then(|i| i.downcast_ref::<ureq::Error>())
                .is_some_and(|u| matches!(u, ureq::Error::Timeout(_)));
        if timed_out {
            retry(self.at.network(format!(
                "{} stalled or ran out of time after {} ({:.1} s; read timeout {:.1} s)",
                self.server,
                self.progress(),
                self.started.elapsed().as_secs_f64(),
                self.limits.read_timeout.as_secs_f64()
            )))
        } else {
            retry(self.at.network(format!(
                "the connection to {} broke after {}: {e}",
                self.server,
                self.progress()
            )))
        }
    }

    /// Reads the body to its end into memory, failing as soon as it exceeds `max` bytes.
    /// `too_big` builds the error for a body over the limit.
    pub(crate) fn read_to_vec(
        &mut self,
        max: u64,
        too_big: impl Fn(u64) -> Failure,
    ) -> Result<Vec<u8>, Failure> {
        let cap = self.expected.unwrap_or(0).min(max).min(8 << 20);
        let mut out = Vec::with_capacity(usize::try_from(cap).unwrap_or(0));
        let mut buf = vec![0u8; 64 << 10];
        loop {
            // One byte past the limit is enough to know it is exceeded.
            let room = max.saturating_add(1).saturating_sub(out.len() as u64);
            let want = usize::try_from(room.min(buf.len() as u64)).unwrap_or(buf.len());
            if want == 0 {
                return Err(too_big(out.len() as u64));
            }
            let n = self.read(&mut buf[..want])?;
            if n == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&buf[..n]);
            if out.len() as u64 > max {
                return Err(too_big(out.len() as u64));
            }
        }
    }
}
