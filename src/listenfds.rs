//! Sockets passed by systemd socket activation (`LISTEN_FDS`, sd_listen_fds(3)).
