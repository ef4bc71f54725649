//! Serial heartbeat links (a null-modem cable, or a pseudo-terminal in tests).
//!
//! One thread owns the device: it waits in `poll` for bytes from the line or for a frame to
//! send, so sending never waits for the line and receiving never waits for a send. When the
//! device fails (cable unplugged, USB adapter gone, the pty's other side closed) the thread
//! closes it and reopens it every second; the link is simply down meanwhile.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::frame::{Deframer, Piece};
use super::{LinkCounters, LinkSender, ReceiveContext};

const REOPEN_EVERY: Duration = Duration::from_secs(1);

pub struct SerialSender {
    queue: SyncSender<Vec<u8>>,
    wake: Arc<OwnedFd>,
    counters: Arc<LinkCounters>,
}

impl LinkSender for SerialSender {
    fn send(&mut self, message: &[u8]) {
        match self.queue.try_send(super::frame::encode(message)) {
            Ok(()) => {
                let one = 1u64.to_ne_bytes();
                let _ = nix::unistd::write(self.wake.as_fd(), &one);
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.counters.send_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

pub fn open(
    index: usize,
    device: PathBuf,
    baud: u32,
    ctx: ReceiveContext,
    counters: Arc<LinkCounters>,
) -> anyhow::Result<SerialSender> {
    // SAFETY: eventfd returns a new descriptor we own, or -1.
    let raw = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: `raw` is a fresh descriptor owned by nobody else.
    let wake = Arc::new(unsafe { OwnedFd::from_raw_fd(raw) });
    // A few frames: at 19200 baud one heartbeat takes ~60 ms on the wire, so a longer queue
    // would only deliver stale state.
    let (queue, frames) = sync_channel(4);
    let thread_wake = wake.clone();
    let thread_counters = counters.clone();
    std::thread::Builder::new()
        .name(format!("hb-serial-{index}"))
        .spawn(move || {
            if ctx.realtime {
                super::make_realtime(&format!("serial link {}", device.display()));
            }
            let mut line = Line {
                index,
                device,
                baud,
                ctx,
                counters: thread_counters,
                frames,
                wake: thread_wake,
            };
            line.run();
        })?;
    Ok(SerialSender {
        queue,
        wake,
        counters,
    })
}

struct Line {
    index: usize,
    device: PathBuf,
    baud: u32,
    ctx: ReceiveContext,
    counters: Arc<LinkCounters>,
    frames: Receiver<Vec<u8>>,
    wake: Arc<OwnedFd>,
}

impl Line {
    fn run(&mut self) {
        let mut warned = false;
        loop {
            match self.open_port() {
                Ok(port) => {
                    tracing::info!("serial link {} open", self.device.display());
                    warned = false;
                    self.counters.open.store(true, Ordering::Relaxed);
                    let why = self.serve(&port);
                    self.counters.open.store(false, Ordering::Relaxed);
                    tracing::warn!(
                        "serial link {}: {why}; reopening every {} s",
                        self.device.display(),
                        REOPEN_EVERY.as_secs()
                    );
                }
                Err(e) => {
                    if !warned {
                        tracing::warn!(
                            "serial link {}: cannot open: {e}; retrying every {} s",
                            self.device.display(),
                            REOPEN_EVERY.as_secs()
                        );
                        warned = true;
                    }
                }
            }
            // Frames queued while the line is down are stale: drop them.
            while self.frames.try_recv().is_ok() {}
            std::thread::sleep(REOPEN_EVERY);
        }
    }

    fn open_port(&self) -> anyhow::Result<serialport::TTYPort> {
        let port = serialport::new(self.device.to_string_lossy(), self.baud)
            .data_bits(serialport::DataBits::Eight)
            .parity(serialport::Parity::None)
            .stop_bits(serialport::StopBits::One)
            .flow_control(serialport::FlowControl::None)
            .timeout(Duration::from_millis(100))
            .open_native()?;
        let fd = port.as_raw_fd();
        // SAFETY: fcntl on a descriptor the port owns; only flags change.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        Ok(port)
    }

    /// Moves bytes until the device fails; returns why.
    fn serve(&mut self, port: &serialport::TTYPort) -> String {
        // SAFETY: the port outlives this function and keeps the descriptor open.
        let tty = unsafe { BorrowedFd::borrow_raw(port.as_raw_fd()) };
        let mut deframer = Deframer::default();
        let mut buf = [0u8; 512];
        let mut pending: Vec<u8> = Vec::new();
        loop {
            let mut tty_events = PollFlags::POLLIN;
            if !pending.is_empty() {
                tty_events |= PollFlags::POLLOUT;
            }
            let mut fds = [
                PollFd::new(tty, tty_events),
                PollFd::new(self.wake.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::from(1000u16)) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return format!("poll failed: {e}"),
            }
            let tty_rev = fds[0].revents().unwrap_or(PollFlags::empty());
            let wake_rev = fds[1].revents().unwrap_or(PollFlags::empty());
            if wake_rev.contains(PollFlags::POLLIN) {
                let mut eight = [0u8; 8];
                let _ = nix::unistd::read(self.wake.as_raw_fd(), &mut eight);
                while let Ok(frame) = self.frames.try_recv() {
                    // Only the newest state matters when the line is slower than we send.
                    if pending.len() > 2 * super::frame::MAX_FRAME {
                        pending.clear();
                        self.counters.send_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    pending.extend_from_slice(&frame);
                }
            }
            if tty_rev.contains(PollFlags::POLLIN) {
                match nix::unistd::read(tty.as_raw_fd(), &mut buf) {
                    Ok(0) => return "the line closed".into(),
                    Ok(n) => {
                        let (ctx, counters, index) = (&self.ctx, &self.counters, self.index);
                        deframer.push(&buf[..n], |piece| match piece {
                            Piece::Frame(bytes) => ctx.accept(index, &bytes, counters),
                            Piece::Garbage => counters.count(crate::wire::Reject::Malformed),
                        });
                    }
                    Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return format!("read failed: {e}"),
                }
            } else if tty_rev.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
                return "the line hung up".into();
            }
            if !pending.is_empty() {
                match nix::unistd::write(tty, &pending) {
                    Ok(n) => {
                        pending.drain(..n);
                        if pending.is_empty() {
                            self.counters.sent.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return format!("write failed: {e}"),
                }
            }
        }
    }
}
