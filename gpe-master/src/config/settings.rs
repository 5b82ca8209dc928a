//! gunicorn's settings (26.1, `gunicorn/config.py`): their names in a config file, their flags,
//! and what gpe-master does with each.

/// How a setting is spelled on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A flag without a value (`--daemon`).
    Flag,
    /// A flag with a value (`--workers 4`).
    Value,
    /// A flag with a value, repeatable; the whole list comes from one source (`--bind`, `-e`).
    List,
}

/// What gpe-master does with a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Use {
    /// gpe-master implements it.
    Master,
    /// It configures gunicorn's Python workers (worker class, HTTP parser, TLS, …): a gpe
    /// worker is configured by its own flags. Accepted, with one warning.
    Worker,
    /// A gunicorn master feature gpe-master does not have (syslog, statsd, a Python logging
    /// config, the control socket, dirty arbiters). Accepted, with one warning.
    Unsupported,
    /// A Python server hook (`post_fork`, …): config files only. Ignored, with one warning.
    Hook,
}

/// One gunicorn setting.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Setting {
    /// Its name in a config file (`max_requests`).
    pub(crate) name: &'static str,
    /// Its flags (`-w`, `--workers`); empty for config-file-only settings.
    pub(crate) flags: &'static [&'static str],
    pub(crate) kind: Kind,
    pub(crate) used: Use,
}

impl Setting {
    /// The long flag (`--max-requests`), if it has one.
    pub(crate) fn long(&self) -> Option<&'static str> {
        self.flags.iter().copied().find(|f| f.starts_with("--"))
    }
}

macro_rules! settings {
    ($($name:literal [$($flag:literal),*] $kind:ident $used:ident,)*) => {
        /// Every gunicorn 26.1 setting.
        pub(crate) const SETTINGS: &[Setting] = &[
            $(Setting { name: $name, flags: &[$($flag),*], kind: Kind::$kind, used: Use::$used },)*
        ];
    };
}

settings! {
    "config" ["-c", "--config"] Value Master,
    "wsgi_app" [] Value Worker,
    "bind" ["-b", "--bind"] List Master,
    "backlog" ["--backlog"] Value Master,
    "workers" ["-w", "--workers"] Value Master,
    "worker_class" ["-k", "--worker-class"] Value Worker,
    "threads" ["--threads"] Value Worker,
    "worker_connections" ["--worker-connections"] Value Worker,
    "max_requests" ["--max-requests"] Value Master,
    "max_requests_jitter" ["--max-requests-jitter"] Value Master,
    "timeout" ["-t", "--timeout"] Value Master,
    "graceful_timeout" ["--graceful-timeout"] Value Master,
    "keepalive" ["--keep-alive"] Value Worker,
    "limit_request_line" ["--limit-request-line"] Value Worker,
    "limit_request_fields" ["--limit-request-fields"] Value Worker,
    "limit_request_field_size" ["--limit-request-field_size"] Value Worker,
    "reload" ["--reload"] Flag Worker,
    "reload_engine" ["--reload-engine"] Value Worker,
    "reload_extra_files" ["--reload-extra-file"] List Worker,
    "spew" ["--spew"] Flag Worker,
    "check_config" ["--check-config"] Flag Master,
    "print_config" ["--print-config"] Flag Master,
    "preload_app" ["--preload"] Flag Worker,
    "sendfile" ["--no-sendfile"] Flag Worker,
    "reuse_port" ["--reuse-port"] Flag Master,
    "chdir" ["--chdir"] Value Master,
    "daemon" ["-D", "--daemon"] Flag Master,
    "raw_env" ["-e", "--env"] List Master,
    "pidfile" ["-p", "--pid"] Value Master,
    "worker_tmp_dir" ["--worker-tmp-dir"] Value Master,
    "user" ["-u", "--user"] Value Master,
    "group" ["-g", "--group"] Value Master,
    "umask" ["-m", "--umask"] Value Master,
    "initgroups" ["--initgroups"] Flag Master,
    "tmp_upload_dir" [] Value Worker,
    "secure_scheme_headers" [] Value Worker,
    "forwarded_allow_ips" ["--forwarded-allow-ips"] Value Worker,
    "accesslog" ["--access-logfile"] Value Master,
    "disable_redirect_access_to_syslog" ["--disable-redirect-access-to-syslog"] Flag Unsupported,
    "access_log_format" ["--access-logformat"] Value Master,
    "errorlog" ["--error-logfile", "--log-file"] Value Master,
    "loglevel" ["--log-level"] Value Master,
    "capture_output" ["--capture-output"] Flag Master,
    "logger_class" ["--logger-class"] Value Unsupported,
    "logconfig" ["--log-config"] Value Unsupported,
    "logconfig_dict" [] Value Unsupported,
    "logconfig_json" ["--log-config-json"] Value Unsupported,
    "syslog_addr" ["--log-syslog-to"] Value Unsupported,
    "syslog" ["--log-syslog"] Flag Unsupported,
    "syslog_prefix" ["--log-syslog-prefix"] Value Unsupported,
    "syslog_facility" ["--log-syslog-facility"] Value Unsupported,
    "enable_stdio_inheritance" ["-R", "--enable-stdio-inheritance"] Flag Master,
    "statsd_host" ["--statsd-host"] Value Unsupported,
    "dogstatsd_tags" ["--dogstatsd-tags"] Value Unsupported,
    "statsd_prefix" ["--statsd-prefix"] Value Unsupported,
    "enable_backlog_metric" ["--enable-backlog-metric"] Flag Unsupported,
    "proc_name" ["-n", "--name"] Value Master,
    "default_proc_name" [] Value Unsupported,
    "pythonpath" ["--pythonpath"] Value Worker,
    "paste" ["--paste", "--paster"] Value Worker,
    "on_starting" [] Value Hook,
    "on_reload" [] Value Hook,
    "when_ready" [] Value Hook,
    "pre_fork" [] Value Hook,
    "post_fork" [] Value Hook,
    "post_worker_init" [] Value Hook,
    "worker_int" [] Value Hook,
    "worker_abort" [] Value Hook,
    "pre_exec" [] Value Hook,
    "pre_request" [] Value Hook,
    "post_request" [] Value Hook,
    "child_exit" [] Value Hook,
    "worker_exit" [] Value Hook,
    "nworkers_changed" [] Value Hook,
    "on_exit" [] Value Hook,
    "ssl_context" [] Value Hook,
    "proxy_protocol" ["--proxy-protocol"] Value Worker,
    "proxy_allow_ips" ["--proxy-allow-from"] Value Worker,
    "protocol" ["--protocol"] Value Worker,
    "uwsgi_allow_ips" ["--uwsgi-allow-from"] Value Worker,
    "keyfile" ["--keyfile"] Value Worker,
    "certfile" ["--certfile"] Value Worker,
    "ssl_version" ["--ssl-version"] Value Worker,
    "cert_reqs" ["--cert-reqs"] Value Worker,
    "ca_certs" ["--ca-certs"] Value Worker,
    "suppress_ragged_eofs" ["--suppress-ragged-eofs"] Flag Worker,
    "do_handshake_on_connect" ["--do-handshake-on-connect"] Flag Worker,
    "ciphers" ["--ciphers"] Value Worker,
    "http_protocols" ["--http-protocols"] Value Worker,
    "http2_cleartext" ["--http2-cleartext"] Value Worker,
    "http2_max_concurrent_streams" ["--http2-max-concurrent-streams"] Value Worker,
    "http2_initial_window_size" ["--http2-initial-window-size"] Value Worker,
    "http2_max_frame_size" ["--http2-max-frame-size"] Value Worker,
    "http2_max_header_list_size" ["--http2-max-header-list-size"] Value Worker,
    "raw_paste_global_conf" ["--paste-global"] List Worker,
    "permit_obsolete_folding" ["--permit-obsolete-folding"] Flag Worker,
    "strip_header_spaces" ["--strip-header-spaces"] Flag Worker,
    "permit_unconventional_http_method" ["--permit-unconventional-http-method"] Flag Worker,
    "permit_unconventional_http_version" ["--permit-unconventional-http-version"] Flag Worker,
    "casefold_http_method" ["--casefold-http-method"] Flag Worker,
    "forwarder_headers" ["--forwarder-headers"] Value Worker,
    "header_map" ["--header-map"] Value Worker,
    "asgi_loop" ["--asgi-loop"] Value Worker,
    "asgi_lifespan" ["--asgi-lifespan"] Value Worker,
    "asgi_disconnect_grace_period" ["--asgi-disconnect-grace-period"] Value Worker,
    "http_parser" ["--http-parser"] Value Worker,
    "root_path" ["--root-path"] Value Worker,
    "dirty_apps" ["--dirty-app"] List Unsupported,
    "dirty_workers" ["--dirty-workers"] Value Unsupported,
    "dirty_timeout" ["--dirty-timeout"] Value Unsupported,
    "dirty_threads" ["--dirty-threads"] Value Unsupported,
    "dirty_graceful_timeout" ["--dirty-graceful-timeout"] Value Unsupported,
    "on_dirty_starting" [] Value Hook,
    "dirty_post_fork" [] Value Hook,
    "dirty_worker_init" [] Value Hook,
    "dirty_worker_exit" [] Value Hook,
    "control_socket" ["--control-socket"] Value Unsupported,
    "control_socket_mode" ["--control-socket-mode"] Value Unsupported,
    "control_socket_disable" ["--no-control-socket"] Flag Unsupported,
}

/// The setting called `name` in a config file.
pub(crate) fn by_name(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name == name)
}

/// The settings gpe-master accepts but does not apply (worker-side, unsupported).
pub(crate) fn ignored() -> impl Iterator<Item = &'static Setting> {
    SETTINGS
        .iter()
        .filter(|s| matches!(s.used, Use::Worker | Use::Unsupported) && !s.flags.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_flags_are_unique() {
        let mut names = std::collections::HashSet::new();
        let mut flags = std::collections::HashSet::new();
        for s in SETTINGS {
            assert!(names.insert(s.name), "{} twice", s.name);
            for f in s.flags {
                assert!(flags.insert(*f), "{f} twice");
                assert!(f.starts_with('-'), "{f}");
            }
            if s.used != Use::Hook && !s.flags.is_empty() {
                assert!(s.long().is_some(), "{} has no long flag", s.name);
            }
        }
        assert_eq!(
            by_name("max_requests").and_then(Setting::long),
            Some("--max-requests")
        );
        assert!(ignored().any(|s| s.name == "threads"));
        assert!(!ignored().any(|s| s.name == "workers"));
    }
}
