# Sourced by scripts/demo and scripts/test: what building apppass needs from Debian.
# (SQLite is compiled in, with gcc; libsqlite3-dev only for --no-default-features.
# apppassd links libpq: libpq-dev.)
BUILD_PACKAGES="gcc pkg-config libpam0g-dev libpq-dev"

# Prints the packages of "$@" that are not installed.
missing_packages() {
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || printf ' %s' "$p"
    done
}

# Installs "$2..." if missing, as root; $1 says what they are for.
install_packages() {
    what=$1
    shift
    missing=$(missing_packages "$@")
    [ -z "$missing" ] && return 0
    echo "== Installing $what:$missing"
    case " $missing " in
    # Left to debconf's default, postfix installs as an "Internet Site" and starts a
    # system MTA on port 25; the tests run their own instance and need none.
    *" postfix "*) echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections ;;
    esac
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
}

need_build_prereqs() {
    if [ "$(id -u)" = 0 ]; then
        install_packages "build prerequisites" $BUILD_PACKAGES
        return
    fi
    missing=$(missing_packages $BUILD_PACKAGES)
    [ -z "$missing" ] && return 0
    echo "Missing Debian packages:$missing" >&2
    echo "Install them with: sudo apt-get install$missing" >&2
    exit 1
}

# What the tests drive: a syslog daemon (the module's log lines are checked where
# admins read them), PAM modules to stack with, and the real servers and clients of the
# end-to-end tests (Dovecot, OpenSSH, curl, sshpass) and fail2ban; PostgreSQL (server,
# client, libpq5) for the PostgreSQL store's tests, which start a private cluster; the
# leak checkers of tests/leak_logins.rs (valgrind, gcc's libasan8), chattr (e2fsprogs)
# and mount (util-linux) for tests/faults.rs, Debian's libargon2 (libargon2-dev),
# which tests/argon2_interop.rs has verify what apppass hashes, systemd for
# tests/units.rs and tests/activation.rs (systemd-analyze, systemd-socket-activate; it
# does not become PID 1), and Postfix with python3 (smtplib) for tests/postfix.rs.
TEST_PACKAGES="rsyslog gdb libpam-modules dovecot-imapd dovecot-pop3d dovecot-submissiond openssh-server openssh-client sshpass curl fail2ban postgresql postgresql-client libpq5 valgrind libasan8 e2fsprogs util-linux libargon2-dev systemd postfix python3 libpam-oath oathtool"

need_test_prereqs() {
    if [ "$(id -u)" = 0 ]; then
        install_packages "test prerequisites" $TEST_PACKAGES
    else
        missing=$(missing_packages $TEST_PACKAGES)
        [ -z "$missing" ] || echo "Missing Debian packages (tests that need them will skip, or fail under CI):$missing" >&2
    fi
    # A socket left by a daemon that has gone (a restored machine, a killed session)
    # still exists but refuses every message: ask logger whether anyone answers.
    if ! logger --socket-errors=on -p authpriv.debug -t apppass-test "syslog probe" 2>/dev/null &&
        [ "$(id -u)" = 0 ] && command -v rsyslogd >/dev/null; then
        echo "== Starting rsyslogd (no syslog daemon was listening on /dev/log)"
        rm -f /dev/log /run/rsyslogd.pid
        rsyslogd
        i=0
        while [ ! -S /dev/log ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    fi
}

# What tests/debian/check needs (as root): the Debian packaging tools, lintian,
# pamtester to log in through the installed module, python3 to compare JSON listings
# across an upgrade, and adduser, which the apppass package depends on (installed
# beforehand, so that installing the .debs fetches nothing).
DEB_PACKAGES="build-essential debhelper dpkg-dev lintian pamtester python3 adduser"

need_deb_prereqs() {
    install_packages "Debian packaging prerequisites" $DEB_PACKAGES
}
