//! `--creds USER[:PASSWORD]`: a user name and password given on the command line, the
//! password asked for on the terminal (not echoed) when it is left out.

use std::fmt;
use std::io::{self, BufRead, Write};

use crate::{Error, Result};

/// A user name and password; `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct UserPassword {
    /// The user name.
    pub user: String,
    /// The password or token.
    pub password: String,
}

impl fmt::Debug for UserPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserPassword")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Parses `--creds`: `USER:PASSWORD` (the password may hold `:`), or `USER`, whose password
/// is then read from the terminal on stdin, with echo off.
pub fn from_flag(arg: &str) -> Result<UserPassword> {
    let (user, password) = match arg.split_once(':') {
        Some((u, p)) => (u, Some(p.to_owned())),
        None => (arg, None),
    };
    if user.is_empty() {
        return Err(Error::Usage(
            "--creds: expected USER[:PASSWORD], the user name is empty".into(),
        ));
    }
    let password = match password {
        Some(p) => p,
        None => ask_password(user)?,
    };
    Ok(UserPassword {
        user: user.to_owned(),
        password,
    })
}

/// Asks for `user`'s password on the terminal that stdin is, echo off.
fn ask_password(user: &str) -> Result<String> {
    use rustix::termios::{LocalModes, OptionalActions, isatty, tcgetattr, tcsetattr};
    let stdin = io::stdin();
    if !isatty(&stdin) {
        return Err(Error::Usage(format!(
            "--creds {user}: no password given, and stdin is not a terminal to ask for one on; \
             give --creds {user}:PASSWORD or use an auth file"
        )));
    }
    let saved = tcgetattr(&stdin).map_err(|e| Error::io("<stdin>", e.into()))?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    // Echo off before the prompt: what is typed once it shows is never echoed.
    tcsetattr(&stdin, OptionalActions::Now, &quiet).map_err(|e| Error::io("<stdin>", e.into()))?;
    {
        let mut err = io::stderr().lock();
        // A prompt that cannot be shown still leaves the terminal to type into.
        let _ = write!(err, "Password for {user}: ");
        let _ = err.flush();
    }
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    // Echo back on whatever happened, before anything else can fail.
    let restored = tcsetattr(&stdin, OptionalActions::Now, &saved);
    let _ = writeln!(io::stderr().lock());
    read.map_err(|e| Error::io("<stdin>", e))?;
    restored.map_err(|e| Error::io("<stdin>", e.into()))?;
    let password = line.trim_end_matches(['\n', '\r']).to_owned();
    if password.is_empty() {
        return Err(Error::Usage(format!("--creds {user}: empty password")));
    }
    Ok(password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_and_password_from_the_flag() -> Result<()> {
        let c = from_flag("builder:pa:ss word")?;
        assert_eq!(
            (c.user.as_str(), c.password.as_str()),
            ("builder", "pa:ss word")
        );
        assert!(!format!("{c:?}").contains("pa:ss"));
        assert!(from_flag(":pw").is_err());
        Ok(())
    }
}
