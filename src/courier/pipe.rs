//! Pipe aliases (`alias: | command args`, SPEC §6): the message on stdin, no shell.
//!
//! chasquid runs pipe aliases with its own environment and sets nothing; tambo clears the
//! environment (see [`command`]) and gives the command what it would otherwise have to parse
//! out of the message, under Postfix pipe(8)/local(8) names:
//!
//! - `SENDER`: the envelope sender, empty for `<>`;
//! - `RECIPIENT`: the alias address (`key@domain`) whose line names the command;
//! - `ALIAS`: the same, under a name that says what it is.
//!
//! The message is passed unchanged (chasquid does the same), so a command that checks DKIM
//! sees it as received. Exit 0 = done, 75 = temporary, anything else = permanent (chasquid
//! treats every failure as permanent; the EX_TEMPFAIL convention is what MDAs expect).

use crate::courier::{DeliveryError, command};
use crate::message::StoredMessage;
use std::time::Duration;

/// Runs the pipe alias `argv` (named by `alias`) with the message of `item` on stdin.
pub async fn deliver(
    argv: &[String],
    alias: &str,
    from: &str,
    item: &StoredMessage,
    limit: Duration,
) -> Result<(), DeliveryError> {
    command::run(argv, &environment(alias, from), item, b"", limit).await
}

fn environment(alias: &str, from: &str) -> Vec<(String, String)> {
    let sender = if from == "<>" { "" } else { from };
    vec![
        ("SENDER".to_string(), sender.to_string()),
        ("RECIPIENT".to_string(), alias.to_string()),
        ("ALIAS".to_string(), alias.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::courier::command::tests::item_with;

    const LIMIT: Duration = Duration::from_secs(10);

    fn argv(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn message_and_environment_reach_the_command() {
        let data = b"Subject: ticket\r\n\r\nplease help\r\n";
        let (tmp, item) = item_with(data);
        let out = tmp.path().join("out");
        let script =
            "cat > \"$0\"; printf '%s|%s|%s' \"$SENDER\" \"$RECIPIENT\" \"$ALIAS\" > \"$0.env\"";
        let argv = argv(&["/bin/sh", "-c", script, out.to_str().unwrap()]);
        let alias = "tickets@example.com";
        smol::block_on(deliver(&argv, alias, "bob@example.org", &item, LIMIT)).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), data);
        let env = std::fs::read_to_string(tmp.path().join("out.env")).unwrap();
        assert_eq!(
            env,
            "bob@example.org|tickets@example.com|tickets@example.com"
        );
    }

    #[test]
    fn null_sender_is_empty() {
        for from in ["", "<>"] {
            let env = environment("a@example.com", from);
            assert_eq!(env[0], ("SENDER".to_string(), String::new()), "{from:?}");
        }
    }

    #[test]
    fn exit_codes() {
        let (_tmp, item) = item_with(b"x\r\n");
        // (argv, want: None = delivered, Some(permanent))
        let cases: [(&[&str], Option<bool>); 5] = [
            (&["cat"], None),
            (&["/bin/sh", "-c", "exit 75"], Some(false)),
            (&["/bin/sh", "-c", "exit 1"], Some(true)),
            (&["/no/such/command"], Some(true)),
            (&["/bin/sleep", "30"], Some(false)),
        ];
        for (args, want) in cases {
            let limit = Duration::from_secs(1);
            let got = smol::block_on(deliver(&argv(args), "a@example.com", "", &item, limit));
            assert_eq!(got.map_err(|e| e.permanent).err(), want, "{args:?}");
        }
    }
}
