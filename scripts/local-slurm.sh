#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for trying and testing the Slurm manager config
# (manager_configs/slurm.yaml) without a real cluster.
#
#   scripts/local-slurm.sh start    install slurm-wlm + munge if missing, start munged,
#                                   slurmctld and slurmd, run a self-check job
#   scripts/local-slurm.sh stop     cancel all jobs, stop the daemons it started
#   scripts/local-slurm.sh status   report whether it runs (exit 0 = running, 3 = stopped)
#
# Run as root (daemons and jobs run as root: SlurmUser=root). Everything lives in one
# state directory, $BESPOKE_FRACTAL_SLURM_DIR (default /var/lib/bespoke-fractal-slurm):
# slurm.conf, a private munge key and socket, controller state, slurmd spool, logs and pid
# files. Nothing is written to /etc. Systemd is not used; the daemons are started directly.
# Client commands (sbatch, squeue, sinfo, scancel, scontrol, sacct) need:
#
#   export SLURM_CONF=$BESPOKE_FRACTAL_SLURM_DIR/slurm.conf
#
# No slurmdbd: plain `sacct` answers "Slurm accounting storage is disabled". Finished jobs
# are written by jobcomp/filetxt and read with `sacct -c` (or `scontrol show job ID` for
# MinJobAge seconds after the end).
#
# Ports: $BESPOKE_FRACTAL_SLURM_CTLD_PORT (default 6817; slurmctld listens on all
# interfaces, Slurm 22.05 has no option against it) and $BESPOKE_FRACTAL_SLURM_SLURMD_PORT
# (default 6818, 127.0.0.1 only). Requests need a credential from the private munge key.
set -euo pipefail

# The daemons live in sbin.
PATH="$PATH:/usr/sbin:/sbin"

STATE_DIR="${BESPOKE_FRACTAL_SLURM_DIR:-/var/lib/bespoke-fractal-slurm}"
CTLD_PORT="${BESPOKE_FRACTAL_SLURM_CTLD_PORT:-6817}"
SLURMD_PORT="${BESPOKE_FRACTAL_SLURM_SLURMD_PORT:-6818}"
CONF="$STATE_DIR/slurm.conf"
MUNGE_DIR="$STATE_DIR/munge"
MUNGE_SOCKET="$MUNGE_DIR/munge.socket"
LOG_DIR="$STATE_DIR/log"
RUN_DIR="$STATE_DIR/run"
NODE="$(hostname -s)"
START_TIMEOUT=60 # seconds to wait for each daemon / the node / the self-check job

export SLURM_CONF="$CONF"

# Seconds since $1 (a `date +%s%N` value), one decimal.
elapsed() {
    local ns=$(($(date +%s%N) - $1))
    printf '%d.%d' $((ns / 1000000000)) $((ns / 100000000 % 10))
}

fail() {
    echo "local-slurm: error: $*" >&2
    exit 1
}

# Any unexpected failing command still ends with one line saying what failed.
trap 'echo "local-slurm: error: command failed (line $LINENO): $BASH_COMMAND" >&2' ERR

# pid of a running daemon from its pid file, or nothing.
running_pid() {
    local pidfile="$RUN_DIR/$1.pid" name="$1" pid
    [[ -r "$pidfile" ]] || return 0
    pid="$(<"$pidfile")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 0
    # Check the name too, so a reused pid is not mistaken for the daemon.
    if kill -0 "$pid" 2>/dev/null && [[ "$(ps -p "$pid" -o comm= 2>/dev/null)" == "$name" ]]; then
        echo "$pid"
    fi
}

# Last error-ish line of a log, for the one-line failure message.
last_log_line() {
    [[ -r "$1" ]] || { echo "no log at $1"; return 0; }
    grep -E -i 'error|fatal' "$1" | tail -n 1 || tail -n 1 "$1"
}

port_busy() {
    ss -Hltn "sport = :$1" 2>/dev/null | grep -q .
}

install_packages() {
    local missing=0 cmd
    for cmd in slurmctld slurmd munged sbatch; do
        command -v "$cmd" >/dev/null 2>&1 || missing=1
    done
    [[ $missing == 0 ]] && return 0
    command -v apt-get >/dev/null || fail "slurmctld/slurmd/munged missing and no apt-get to install slurm-wlm and munge"
    echo "local-slurm: installing slurm-wlm and munge with apt-get"
    local apt=(apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 slurm-wlm munge)
    # Retry once after refreshing the package lists (they may be stale or absent).
    if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" >"$LOG_DIR/apt.log" 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >>"$LOG_DIR/apt.log" 2>&1 || true
        DEBIAN_FRONTEND=noninteractive "${apt[@]}" >>"$LOG_DIR/apt.log" 2>&1 ||
            fail "apt-get install slurm-wlm munge failed (see $LOG_DIR/apt.log)"
    fi
}

write_conf() {
    local cpus mem_kib real_mem def_mem tmp
    cpus="$(nproc)"
    mem_kib="$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
    # slurmd marks the node invalid if it has less memory than RealMemory: stay 5% below.
    real_mem=$((mem_kib / 1024 * 95 / 100))
    # With CR_Core_Memory a job without --mem would otherwise get the whole node's memory.
    def_mem=$((real_mem / cpus))
    tmp="$CONF.tmp.$$"
    cat >"$tmp" <<EOF
# Written by scripts/local-slurm.sh (regenerated on every start). One node, no slurmdbd.
ClusterName=bespoke
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
# slurmd listens on NodeAddr (127.0.0.1) only; slurmctld ignores this and uses 0.0.0.0.
CommunicationParameters=NoInAddrAny
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$STATE_DIR/ctld
SlurmdSpoolDir=$STATE_DIR/spool
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
# No cgroups: works in containers and VMs without systemd or a delegated cgroup tree.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$def_mem
SchedulerType=sched/backfill
# Start batch jobs at once (the default batch_sched_delay lets them wait up to 3 s).
SchedulerParameters=batch_sched_delay=0
ReturnToService=2
# Seconds between SIGTERM and SIGKILL when a job is cancelled or times out.
KillWait=5
# Finished jobs stay visible to squeue/scontrol this many seconds.
MinJobAge=300
# Reject at submission (sbatch fails) jobs that can never run, e.g. more CPUs than the node has.
EnforcePartLimits=ALL
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$LOG_DIR/jobcomp.txt
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$real_mem State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    if [[ -f "$CONF" ]] && cmp -s "$tmp" "$CONF"; then
        rm -f "$tmp"
        return 1 # unchanged
    fi
    mv "$tmp" "$CONF"
    return 0
}

start_munged() {
    [[ -n "$(running_pid munged)" ]] && return 0
    if [[ ! -s "$MUNGE_DIR/munge.key" ]]; then
        mungekey --create --keyfile="$MUNGE_DIR/munge.key" >/dev/null 2>&1 ||
            dd if=/dev/urandom of="$MUNGE_DIR/munge.key" bs=1024 count=1 status=none
        chmod 600 "$MUNGE_DIR/munge.key"
    fi
    munged --key-file="$MUNGE_DIR/munge.key" --socket="$MUNGE_SOCKET" \
        --pid-file="$RUN_DIR/munged.pid" --log-file="$LOG_DIR/munged.log" \
        --seed-file="$MUNGE_DIR/munged.seed" >/dev/null 2>&1 ||
        fail "munged did not start: $(last_log_line "$LOG_DIR/munged.log")"
    munge -n -S "$MUNGE_SOCKET" | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1 ||
        fail "munged runs but a munge/unmunge round trip failed (socket $MUNGE_SOCKET)"
}

start_slurmctld() {
    [[ -n "$(running_pid slurmctld)" ]] && return 0
    slurmctld -f "$CONF" >>"$LOG_DIR/slurmctld.stdout" 2>&1 ||
        fail "slurmctld did not start: $(last_log_line "$LOG_DIR/slurmctld.log")"
    local t
    for ((t = 0; t < START_TIMEOUT * 4; t++)); do
        scontrol ping 2>/dev/null | grep -q 'is UP' && return 0
        [[ -n "$(running_pid slurmctld)" ]] || [[ $t -lt 8 ]] ||
            fail "slurmctld exited: $(last_log_line "$LOG_DIR/slurmctld.log")"
        sleep 0.25
    done
    fail "slurmctld not answering after ${START_TIMEOUT}s: $(last_log_line "$LOG_DIR/slurmctld.log")"
}

start_slurmd() {
    [[ -n "$(running_pid slurmd)" ]] && return 0
    slurmd -f "$CONF" >>"$LOG_DIR/slurmd.stdout" 2>&1 ||
        fail "slurmd did not start: $(last_log_line "$LOG_DIR/slurmd.log")"
}

wait_node_ready() {
    local t state=""
    for ((t = 0; t < START_TIMEOUT * 4; t++)); do
        state="$(sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null || true)"
        case "$state" in
            idle | mixed | allocated | completing) return 0 ;;
            *drain* | *down* | *invalid*)
                [[ $t -gt 20 ]] && fail "node $NODE is '$state': $(scontrol show node "$NODE" | grep -o 'Reason=.*' || last_log_line "$LOG_DIR/slurmd.log")" ;;
        esac
        [[ -n "$(running_pid slurmd)" ]] || [[ $t -lt 8 ]] ||
            fail "slurmd exited: $(last_log_line "$LOG_DIR/slurmd.log")"
        sleep 0.25
    done
    fail "node $NODE not idle after ${START_TIMEOUT}s (state '$state'): $(last_log_line "$LOG_DIR/slurmd.log")"
}

self_check() {
    local job t0 t state out="$LOG_DIR/selfcheck.out"
    t0=$(date +%s%N)
    rm -f "$out"
    job="$(sbatch --parsable --job-name=local-slurm-selfcheck --time=1 --output="$out" --wrap hostname)" ||
        fail "sbatch of the self-check job failed"
    for ((t = 0; t < START_TIMEOUT * 4; t++)); do
        state="$(scontrol show job "$job" -o 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2 || true)"
        case "$state" in
            COMPLETED)
                grep -qx "$NODE" "$out" 2>/dev/null || grep -q . "$out" ||
                    fail "self-check job $job completed but wrote no output to $out"
                echo "local-slurm: self-check job $job (sbatch --wrap hostname) completed in $(elapsed "$t0") s"
                return 0
                ;;
            FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL | DEADLINE)
                fail "self-check job $job ended $state (see $out, $LOG_DIR/slurmd.log)" ;;
        esac
        sleep 0.25
    done
    fail "self-check job $job not finished after ${START_TIMEOUT}s (state '$state')"
}

cmd_start() {
    [[ "$(id -u)" == 0 ]] || fail "start must run as root (the daemons run as SlurmUser=root)"
    local t0
    t0=$(date +%s%N)
    # Sockets need every directory on the path traversable; keys stay private (600).
    mkdir -p "$STATE_DIR" "$MUNGE_DIR" "$LOG_DIR" "$RUN_DIR" "$STATE_DIR/ctld" "$STATE_DIR/spool"
    chmod 755 "$STATE_DIR" "$MUNGE_DIR"
    install_packages
    # Check the ports before starting anything, so a clash leaves nothing running.
    if [[ -z "$(running_pid slurmctld)" ]] && port_busy "$CTLD_PORT"; then
        fail "port $CTLD_PORT is in use by another program (set BESPOKE_FRACTAL_SLURM_CTLD_PORT)"
    fi
    if [[ -z "$(running_pid slurmd)" ]] && port_busy "$SLURMD_PORT"; then
        fail "port $SLURMD_PORT is in use by another program (set BESPOKE_FRACTAL_SLURM_SLURMD_PORT)"
    fi
    local changed=0
    write_conf && changed=1
    start_munged
    if [[ $changed == 1 && -n "$(running_pid slurmctld)" ]]; then
        scontrol reconfigure >/dev/null || fail "slurm.conf changed and 'scontrol reconfigure' failed"
    fi
    start_slurmctld
    start_slurmd
    wait_node_ready
    echo "local-slurm: cluster up in $(elapsed "$t0") s (node $NODE, partition debug)"
    self_check
    echo "export SLURM_CONF=$CONF"
}

stop_daemon() {
    local name="$1" pid t
    pid="$(running_pid "$name")"
    [[ -n "$pid" ]] || { rm -f "$RUN_DIR/$name.pid"; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((t = 0; t < 40; t++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.25
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    rm -f "$RUN_DIR/$name.pid"
    echo "local-slurm: stopped $name (pid $pid)"
}

cmd_stop() {
    # Cancel jobs first so no job processes (slurmstepd and its children) outlive slurmd.
    if [[ -n "$(running_pid slurmctld)" ]] && [[ -n "$(squeue -h -o %i 2>/dev/null)" ]]; then
        scancel --full $(squeue -h -o %i) 2>/dev/null || true
        local t
        for ((t = 0; t < 60; t++)); do
            [[ -z "$(squeue -h -t running,completing,pending -o %i 2>/dev/null)" ]] && break
            sleep 0.25
        done
    fi
    stop_daemon slurmd
    stop_daemon slurmctld
    stop_daemon munged
}

cmd_status() {
    local name pid up=0 down=0
    for name in munged slurmctld slurmd; do
        pid="$(running_pid "$name")"
        if [[ -n "$pid" ]]; then
            echo "$name: running (pid $pid)"
            up=$((up + 1))
        else
            echo "$name: stopped"
            down=$((down + 1))
        fi
    done
    if [[ $down == 0 ]]; then
        echo "node: $(sinfo -h -N -n "$NODE" -o '%N %T cpus=%c mem=%mMB partition=%P' 2>/dev/null || echo 'not answering')"
        echo "export SLURM_CONF=$CONF"
        return 0
    fi
    [[ $up == 0 ]] && return 3
    return 1
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status)
        rc=0
        cmd_status || rc=$?
        exit "$rc"
        ;;
    *)
        echo "usage: $0 start|stop|status" >&2
        exit 2
        ;;
esac
