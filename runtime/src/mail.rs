//! Alert mail: one blocking SMTP send per event, straight to the configured relay.
//!
//! Plain SMTP without TLS on purpose: the relay is the master's own MTA or one on the
//! management network (what Heartbeat's `MailTo` and mon's `mail.alert` reached through
//! `/usr/bin/mail`). No queue here: a failed alert is reported to the caller, who logs it.

use anyhow::{anyhow, Context, Result};
use lettre::message::Mailbox;
use lettre::transport::smtp::extension::ClientId;
use lettre::{Message, SmtpTransport, Transport};

use crate::config::MailConfig;

pub struct Mailer {
    cfg: MailConfig,
    node: String,
}

impl Mailer {
    pub fn new(cfg: &MailConfig, node: &str) -> Mailer {
        // An empty name would make an invalid sender and greeting.
        let node = if node.is_empty() { "localhost" } else { node };
        Mailer {
            cfg: cfg.clone(),
            node: node.to_string(),
        }
    }

    /// The recipients `send` would use for `to`: `to` itself, else the configured default.
    pub fn recipients<'a>(&'a self, to: &'a [String]) -> &'a [String] {
        if to.is_empty() {
            &self.cfg.to
        } else {
            to
        }
    }

    /// Blocking SMTP send, bounded by the configured timeout. `to` empty means the configured
    /// recipients; none at all means there is nobody to tell, which is not an error.
    pub fn send(&self, to: &[String], subject: &str, body: &str) -> Result<()> {
        let to = self.recipients(to);
        if to.is_empty() {
            return Ok(());
        }
        let from = if self.cfg.from.is_empty() {
            format!("clustermaker@{}", self.node)
        } else {
            self.cfg.from.clone()
        };
        let mut message = Message::builder()
            .from(parse_mailbox(&from).context("mail.from")?)
            // Header values must stay on one line whatever the caller passed.
            .subject(one_line(subject));
        for addr in to {
            message = message.to(parse_mailbox(addr)?);
        }
        let message = message
            .body(body.to_string())
            .context("cannot build the mail")?;

        let transport = SmtpTransport::builder_dangerous(self.cfg.smtp_host.as_str())
            .port(self.cfg.smtp_port)
            .timeout(Some(self.cfg.timeout))
            .hello_name(ClientId::Domain(self.node.clone()))
            .build();
        transport.send(&message).map_err(|e| {
            anyhow!(
                "cannot send mail via {}:{}: {e}",
                self.cfg.smtp_host,
                self.cfg.smtp_port
            )
        })?;
        Ok(())
    }
}

fn parse_mailbox(addr: &str) -> Result<Mailbox> {
    addr.parse()
        .map_err(|e| anyhow!("`{addr}` is not a mail address: {e}"))
}

fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mailer(to: &[&str]) -> Mailer {
        let cfg = MailConfig {
            // Nothing listens here: a test that reaches the network fails.
            smtp_host: "127.0.0.1".into(),
            smtp_port: 9,
            to: to.iter().map(|s| s.to_string()).collect(),
            timeout: std::time::Duration::from_millis(500),
            ..MailConfig::default()
        };
        Mailer::new(&cfg, "servera")
    }

    #[test]
    fn nobody_to_tell_is_not_an_error() {
        mailer(&[]).send(&[], "s", "b").unwrap();
    }

    #[test]
    fn bad_address_is_named() {
        let e = mailer(&[])
            .send(&["not an address".into()], "s", "b")
            .unwrap_err();
        assert!(format!("{e:#}").contains("`not an address`"), "{e:#}");
    }

    #[test]
    fn explicit_recipients_win() {
        let m = mailer(&["ops@example.org"]);
        assert_eq!(m.recipients(&[]), ["ops@example.org".to_string()]);
        assert_eq!(m.recipients(&["a@b".into()]), ["a@b".to_string()]);
    }

    #[test]
    fn subject_stays_on_one_line() {
        assert_eq!(one_line("a\r\nBcc: x"), "a  Bcc: x");
    }
}
