//! The state machine of one read transfer: events in (a datagram from the client, the timer),
//! actions out (send the OACK, send a run of DATA blocks, finish). No I/O, no clock: the caller
//! passes `now` and arms a timer at [`Transfer::deadline`].
//!
//! Blocks are counted internally with absolute `u64` numbers starting at 1; the wire carries the
//! low 16 bits, so block numbers roll over from 65535 to 0 (what curl, tftp-hpa, atftp and iPXE
//! expect) and files of any size can be sent.
//!
//! ACK rules (RFC 1350, RFC 7440):
//! - An ACK for a block `k` inside the outstanding window (`acked < k <= sent`) is progress: the
//!   next window starts at `k + 1`. When `k` is the window's last block that is the normal case;
//!   when it is earlier, the client saw a gap and the window restarts right after what it has.
//! - An ACK for `acked` itself (a duplicate) never triggers a resend in lock-step mode
//!   (windowsize 1): answering duplicates is the Sorcerer's Apprentice bug (RFC 1123 §4.2.3.1),
//!   where every delayed ACK doubles the traffic. With a window, a duplicate is how an RFC 7440
//!   client reports that the window's first block was lost, so the first duplicate after each
//!   (re)transmission resends the window once; further duplicates are ignored until the window is
//!   sent again. Traffic stays bounded by one window per transmission.
//! - ACKs outside the window (old, or for blocks not yet sent) are ignored.
//! - An ERROR from the client ends the transfer at once: nothing more is sent.
//! - When the timer fires with no progress, the OACK or the window is sent again, up to
//!   `retries` times; the next timeout ends the transfer. Progress restores the retry budget.

use std::time::{Duration, Instant};

use super::packet::{self, ClientPacket};

/// The longest client error message kept (for logs).
const MAX_CLIENT_MESSAGE: usize = 128;

/// What a transfer is set up with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransferParams {
    /// Size of the content in bytes.
    pub size: u64,
    /// Negotiated block size (8–65464).
    pub blksize: u16,
    /// Negotiated window (1 = lock-step).
    pub windowsize: u16,
    /// Retransmission timeout.
    pub timeout: Duration,
    /// Retransmissions after which the transfer is abandoned.
    pub retries: u32,
    /// Options were accepted: start with an OACK and wait for ACK 0.
    pub send_oack: bool,
}

/// What the caller must do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing to send; wait for the next datagram or the deadline.
    Wait,
    /// Send (again) the OACK.
    SendOack,
    /// Send DATA blocks `first..=last` (absolute numbers, see [`Transfer::wire_block`]).
    SendData { first: u64, last: u64 },
    /// The transfer is over; send nothing more.
    Finished(Outcome),
}

/// How a transfer ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The client acknowledged the last block.
    Complete,
    /// The client sent an ERROR (message lossily decoded and bounded).
    ClientError { code: u16, message: String },
    /// No progress after all retries.
    GaveUp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// OACK sent, waiting for ACK 0.
    Negotiating,
    /// DATA flowing.
    Sending,
    Done,
}

/// One read transfer.
#[derive(Clone, Debug)]
pub struct Transfer {
    params: TransferParams,
    phase: Phase,
    /// Absolute number of the last block (the one shorter than blksize, possibly empty).
    last_block: u64,
    /// Highest block acknowledged (0 = none).
    acked: u64,
    /// Highest block sent in the current window.
    sent: u64,
    deadline: Instant,
    retries_left: u32,
    /// A duplicate ACK may still trigger one resend of the current window.
    dup_resend_armed: bool,
}

impl Transfer {
    /// Sets up a transfer and returns the first action (send the OACK or the first window).
    pub fn start(params: TransferParams, now: Instant) -> (Transfer, Action) {
        let blksize = u64::from(params.blksize.max(1));
        let mut t = Transfer {
            params: TransferParams {
                windowsize: params.windowsize.max(1),
                ..params
            },
            phase: Phase::Negotiating,
            last_block: params.size / blksize + 1,
            acked: 0,
            sent: 0,
            deadline: now + params.timeout,
            retries_left: params.retries,
            dup_resend_armed: false,
        };
        let action = if params.send_oack {
            Action::SendOack
        } else {
            t.phase = Phase::Sending;
            t.send_window(now)
        };
        (t, action)
    }

    /// When the caller must call [`Transfer::on_timer`]; `None` once finished.
    pub fn deadline(&self) -> Option<Instant> {
        (self.phase != Phase::Done).then_some(self.deadline)
    }

    /// True once the transfer is over.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// The parameters in use.
    pub fn params(&self) -> &TransferParams {
        &self.params
    }

    /// The 16-bit block number carried on the wire for absolute block `abs`.
    pub fn wire_block(abs: u64) -> u16 {
        abs as u16
    }

    /// Byte offset and length of absolute block `abs` (1-based) in the content.
    pub fn block_span(&self, abs: u64) -> (u64, usize) {
        let blksize = u64::from(self.params.blksize);
        let offset = (abs.saturating_sub(1)).saturating_mul(blksize);
        let len = self.params.size.saturating_sub(offset).min(blksize);
        (offset, len as usize)
    }

    /// Bytes of content acknowledged by the client so far.
    pub fn bytes_acked(&self) -> u64 {
        let (offset, len) = self.block_span(self.acked);
        if self.acked == 0 {
            0
        } else {
            offset + len as u64
        }
    }

    /// A datagram from the client's TID.
    pub fn on_datagram(&mut self, datagram: &[u8], now: Instant) -> Action {
        match packet::parse_client_packet(datagram) {
            ClientPacket::Ack(block) => self.on_ack(block, now),
            ClientPacket::Error { code, message } => self.on_client_error(code, message),
            ClientPacket::Other => Action::Wait,
        }
    }

    /// An ACK from the client.
    pub fn on_ack(&mut self, block: u16, now: Instant) -> Action {
        match self.phase {
            Phase::Done => Action::Wait,
            Phase::Negotiating => {
                if block != 0 {
                    return Action::Wait;
                }
                self.phase = Phase::Sending;
                self.retries_left = self.params.retries;
                self.send_window(now)
            }
            Phase::Sending => {
                let outstanding = self.sent - self.acked;
                let delta = u64::from(block.wrapping_sub(self.acked as u16));
                if delta > outstanding {
                    // Older than what was acked, or a block never sent.
                    return Action::Wait;
                }
                if delta == 0 {
                    if self.params.windowsize > 1 && self.dup_resend_armed {
                        return self.resend_window(now, false);
                    }
                    return Action::Wait;
                }
                self.acked += delta;
                self.retries_left = self.params.retries;
                if self.acked == self.last_block {
                    self.phase = Phase::Done;
                    return Action::Finished(Outcome::Complete);
                }
                self.send_window(now)
            }
        }
    }

    /// An ERROR from the client: the transfer ends now.
    pub fn on_client_error(&mut self, code: u16, message: &[u8]) -> Action {
        if self.phase == Phase::Done {
            return Action::Wait;
        }
        self.phase = Phase::Done;
        let message =
            String::from_utf8_lossy(&message[..message.len().min(MAX_CLIENT_MESSAGE)]).into_owned();
        Action::Finished(Outcome::ClientError { code, message })
    }

    /// The timer armed at [`Transfer::deadline`] fired (early calls are harmless).
    pub fn on_timer(&mut self, now: Instant) -> Action {
        if self.phase == Phase::Done || now < self.deadline {
            return Action::Wait;
        }
        if self.retries_left == 0 {
            self.phase = Phase::Done;
            return Action::Finished(Outcome::GaveUp);
        }
        self.retries_left -= 1;
        match self.phase {
            Phase::Negotiating => {
                self.deadline = now + self.params.timeout;
                Action::SendOack
            }
            _ => self.resend_window(now, true),
        }
    }

    /// Sends the window that starts after the last acknowledged block.
    fn send_window(&mut self, now: Instant) -> Action {
        let first = self.acked + 1;
        let last = (self.acked + u64::from(self.params.windowsize)).min(self.last_block);
        self.sent = last;
        self.deadline = now + self.params.timeout;
        self.dup_resend_armed = true;
        Action::SendData { first, last }
    }

    /// Sends again what is outstanding, after a timeout or a duplicate ACK. Only a timeout
    /// re-arms the duplicate trigger: a resend caused by a duplicate must not let the next
    /// duplicate cause another, or each echo would double the traffic.
    fn resend_window(&mut self, now: Instant, rearm: bool) -> Action {
        let action = self.send_window(now);
        self.dup_resend_armed = rearm;
        action
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(1);

    fn params(size: u64, blksize: u16, windowsize: u16, oack: bool) -> TransferParams {
        TransferParams {
            size,
            blksize,
            windowsize,
            timeout: T,
            retries: 3,
            send_oack: oack,
        }
    }

    fn data(first: u64, last: u64) -> Action {
        Action::SendData { first, last }
    }

    #[test]
    fn lock_step_without_options() {
        let t0 = Instant::now();
        let (mut t, a) = Transfer::start(params(1025, 512, 1, false), t0);
        assert_eq!(a, data(1, 1));
        assert_eq!(t.block_span(1), (0, 512));
        assert_eq!(t.on_ack(1, t0), data(2, 2));
        assert_eq!(t.on_ack(2, t0), data(3, 3));
        assert_eq!(t.block_span(3), (1024, 1));
        assert_eq!(t.on_ack(3, t0), Action::Finished(Outcome::Complete));
        assert!(t.is_done());
        assert_eq!(t.deadline(), None);
        assert_eq!(t.on_ack(3, t0), Action::Wait);
    }

    #[test]
    fn exact_multiple_ends_with_an_empty_block() {
        let t0 = Instant::now();
        let (mut t, a) = Transfer::start(params(1024, 512, 1, false), t0);
        assert_eq!(a, data(1, 1));
        t.on_ack(1, t0);
        assert_eq!(t.on_ack(2, t0), data(3, 3));
        assert_eq!(t.block_span(3), (1024, 0));
        assert_eq!(t.on_ack(3, t0), Action::Finished(Outcome::Complete));
        assert_eq!(t.bytes_acked(), 1024);
    }

    #[test]
    fn empty_file_is_one_empty_block() {
        let t0 = Instant::now();
        let (mut t, a) = Transfer::start(params(0, 512, 8, false), t0);
        assert_eq!(a, data(1, 1));
        assert_eq!(t.block_span(1), (0, 0));
        assert_eq!(t.on_ack(1, t0), Action::Finished(Outcome::Complete));
    }

    #[test]
    fn oack_then_windows() {
        let t0 = Instant::now();
        // 10 blocks of 100 bytes, then an empty 11th.
        let (mut t, a) = Transfer::start(params(1000, 100, 4, true), t0);
        assert_eq!(a, Action::SendOack);
        assert_eq!(t.on_ack(1, t0), Action::Wait, "only ACK 0 answers an OACK");
        assert_eq!(t.on_ack(0, t0), data(1, 4));
        assert_eq!(t.on_ack(4, t0), data(5, 8));
        assert_eq!(t.on_ack(8, t0), data(9, 11));
        assert_eq!(t.on_ack(11, t0), Action::Finished(Outcome::Complete));
    }

    #[test]
    fn partial_ack_restarts_the_window_after_it() {
        let t0 = Instant::now();
        let (mut t, _) = Transfer::start(params(100_000, 100, 8, false), t0);
        // Window 1..=8 sent; block 4 was lost, the client acks 3.
        assert_eq!(t.on_ack(3, t0), data(4, 11));
        // A late ACK for 2 (older) is ignored; an ACK for a block never sent too.
        assert_eq!(t.on_ack(2, t0), Action::Wait);
        assert_eq!(t.on_ack(12, t0), Action::Wait);
        assert_eq!(t.on_ack(11, t0), data(12, 19));
    }

    #[test]
    fn duplicate_acks_resend_a_window_at_most_once() {
        let t0 = Instant::now();
        let (mut t, _) = Transfer::start(params(100_000, 100, 8, false), t0);
        assert_eq!(t.on_ack(8, t0), data(9, 16));
        // Block 9 lost: the client reports the gap by acking 8 again, once per later block.
        assert_eq!(t.on_ack(8, t0), data(9, 16));
        for _ in 0..7 {
            assert_eq!(t.on_ack(8, t0), Action::Wait);
        }
        assert_eq!(t.on_ack(16, t0), data(17, 24));
    }

    #[test]
    fn a_timeout_rearms_the_duplicate_trigger_once() {
        let t0 = Instant::now();
        let (mut t, _) = Transfer::start(params(100_000, 100, 8, false), t0);
        assert_eq!(t.on_ack(8, t0), data(9, 16));
        assert_eq!(t.on_ack(8, t0), data(9, 16));
        assert_eq!(t.on_ack(8, t0), Action::Wait);
        assert_eq!(t.on_timer(t0 + T), data(9, 16));
        assert_eq!(t.on_ack(8, t0 + T), data(9, 16));
        assert_eq!(t.on_ack(8, t0 + T), Action::Wait);
    }

    #[test]
    fn lock_step_ignores_duplicate_acks() {
        // The Sorcerer's Apprentice: a delayed duplicate must not cause a second copy of a block.
        let t0 = Instant::now();
        let (mut t, _) = Transfer::start(params(100_000, 512, 1, false), t0);
        assert_eq!(t.on_ack(1, t0), data(2, 2));
        assert_eq!(t.on_ack(1, t0), Action::Wait);
        assert_eq!(t.on_ack(1, t0), Action::Wait);
        assert_eq!(t.on_ack(2, t0), data(3, 3));
    }

    #[test]
    fn block_numbers_roll_over() {
        let t0 = Instant::now();
        let blocks: u64 = 70_000;
        let size = blocks * 512 + 7;
        let (mut t, mut a) = Transfer::start(params(size, 512, 1, false), t0);
        let mut sent = 0u64;
        loop {
            match a {
                Action::SendData { first, last } => {
                    assert_eq!(first, last);
                    assert_eq!(first, sent + 1, "blocks go out in order, none skipped");
                    sent = last;
                    // The client acks the 16-bit number it saw.
                    a = t.on_ack(Transfer::wire_block(last), t0);
                }
                Action::Finished(Outcome::Complete) => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(sent, blocks + 1);
        assert_eq!(Transfer::wire_block(65_536), 0);
        assert_eq!(t.bytes_acked(), size);
    }

    #[test]
    fn rollover_with_windows_and_stale_acks() {
        let t0 = Instant::now();
        let (mut t, _) = Transfer::start(params(200_000 * 8, 8, 16, false), t0);
        // Walk up to just before the wrap.
        let mut last = 16u64;
        while last < 65_530 {
            match t.on_ack(Transfer::wire_block(last), t0) {
                Action::SendData { last: l, .. } => last = l,
                other => panic!("{other:?}"),
            }
        }
        // Outstanding: 65521..=65536. A partial ACK moves the window across the wrap.
        assert_eq!(last, 65_536);
        assert_eq!(
            t.on_ack(Transfer::wire_block(65_525), t0),
            data(65_526, 65_541)
        );
        // Wire block 2 is now absolute 65538 (65536 went out as 0).
        assert_eq!(t.on_ack(2, t0), data(65_539, 65_538 + 16));
        // A stale ACK from before the wrap is old, not a huge jump forward.
        assert_eq!(t.on_ack(65_500, t0), Action::Wait);
    }

    #[test]
    fn timeouts_resend_then_give_up() {
        let t0 = Instant::now();
        let (mut t, _) = Transfer::start(params(10_000, 512, 4, true), t0);
        assert_eq!(
            t.on_timer(t0 + T / 2),
            Action::Wait,
            "early timer is harmless"
        );
        assert_eq!(t.on_timer(t0 + T), Action::SendOack);
        assert_eq!(t.deadline(), Some(t0 + 2 * T));
        assert_eq!(t.on_ack(0, t0 + 2 * T - T / 2), data(1, 4));
        let mut now = t0 + 2 * T;
        // Retries restored by progress: three resends, then give up.
        for _ in 0..3 {
            now += T;
            assert_eq!(t.on_timer(now), data(1, 4));
        }
        now += T;
        assert_eq!(t.on_timer(now), Action::Finished(Outcome::GaveUp));
        assert!(t.is_done());
        assert_eq!(t.on_ack(4, now), Action::Wait);
    }

    #[test]
    fn client_error_ends_at_once() {
        let t0 = Instant::now();
        let (mut t, a) = Transfer::start(params(10_000, 512, 1, true), t0);
        assert_eq!(a, Action::SendOack);
        assert_eq!(
            t.on_datagram(b"\x00\x05\x00\x08blksize refused\x00", t0),
            Action::Finished(Outcome::ClientError {
                code: 8,
                message: "blksize refused".into()
            })
        );
        assert_eq!(t.deadline(), None);
        assert_eq!(t.on_timer(t0 + 10 * T), Action::Wait);
        assert_eq!(t.on_ack(0, t0), Action::Wait);
    }

    #[test]
    fn garbage_from_the_client_is_ignored() {
        let t0 = Instant::now();
        let (mut t, _) = Transfer::start(params(10_000, 512, 1, false), t0);
        for junk in [
            &b""[..],
            b"\x00",
            b"\x00\x04\x00",
            b"\x00\x03\x00\x01xx",
            b"\x00\x01a\x00octet\x00",
        ] {
            assert_eq!(t.on_datagram(junk, t0), Action::Wait);
        }
        assert_eq!(t.on_datagram(b"\x00\x04\x00\x01", t0), data(2, 2));
    }
}
