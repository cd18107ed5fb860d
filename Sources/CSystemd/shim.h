// libsystemd's daemon API (sd_notify, sd_watchdog_enabled, sd_listen_fds_with_names),
// from Debian's libsystemd-dev.
#include <systemd/sd-daemon.h>
