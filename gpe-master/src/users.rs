//! `--user`, `--group` and `--initgroups`: who the workers run as.

use anyhow::Context;

use crate::MasterError;

/// Resolve `--user`/`--group` (names or numbers).
pub(crate) fn ids(cli: &crate::cli::Cli) -> anyhow::Result<(Option<u32>, Option<u32>)> {
    let uid = match &cli.user {
        None => None,
        Some(u) => Some(match u.parse::<u32>() {
            Ok(n) => n,
            Err(_) => nix::unistd::User::from_name(u)
                .with_context(|| format!("--user {u:?}: looking the user up"))?
                .ok_or_else(|| MasterError::NoSuchUser(u.clone()))?
                .uid
                .as_raw(),
        }),
    };
    let gid = match &cli.group {
        None => None,
        Some(g) => Some(match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => nix::unistd::Group::from_name(g)
                .with_context(|| format!("--group {g:?}: looking the group up"))?
                .ok_or_else(|| MasterError::NoSuchGroup(g.clone()))?
                .gid
                .as_raw(),
        }),
    };
    Ok((uid, gid))
}

/// The workers' supplementary groups: `--initgroups` gives them --user's from the group
/// database; otherwise root's workers running as --user get none (they would keep root's).
pub(crate) fn groups(
    cli: &crate::cli::Cli,
    uid: Option<u32>,
    gid: Option<u32>,
) -> anyhow::Result<Option<Vec<u32>>> {
    let Some(uid) = uid else {
        if cli.initgroups {
            tracing::warn!("--initgroups has no effect without --user");
        }
        return Ok(None);
    };
    if !nix::unistd::getuid().is_root() {
        return Ok(None); // not ours to change
    }
    if !cli.initgroups {
        return Ok(Some(Vec::new()));
    }
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .context("--initgroups: looking --user up")?
        .ok_or_else(|| {
            anyhow::anyhow!("--initgroups: uid {uid} has no name in the user database")
        })?;
    let name = std::ffi::CString::new(user.name.clone()).context("--initgroups: user name")?;
    let primary = gid.map_or(user.gid, nix::unistd::Gid::from_raw);
    let list = nix::unistd::getgrouplist(&name, primary)
        .with_context(|| format!("--initgroups: the groups of {}", user.name))?;
    Ok(Some(
        list.into_iter().map(nix::unistd::Gid::as_raw).collect(),
    ))
}
