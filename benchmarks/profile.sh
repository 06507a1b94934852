#!/usr/bin/env bash
# Profiles one section of the benchmark with perf, on PostgreSQL, with the
# homeserver in its own process, and renders flame graphs of the homeserver
# and of the benchmark's clients (BENCHMARKS.md, "Issue 15: profile summary").
#
#   benchmarks/profile.sh SECTION [OUTPUT_DIRECTORY]
#
# SECTION is one of
#   throughput:100:1    the throughput run with 100 senders in one group
#   throughput:100:10   the run with 100 senders over 10 groups
#   commits:SIZE        the add-one commits timed at SIZE members (1000, 10000)
# OUTPUT_DIRECTORY defaults to benchmarks/profiles. It receives, per section
# (":" becomes "-" in names):
#   NAME-homeserver.svg, NAME-clients.svg   flame graphs (inferno)
#   NAME-summary.txt  CPU shares per process and the top frames (self and total)
#   NAME.log          the benchmark's output
# and, in $PROFILE_DATA (default /tmp), NAME.perf.data and the folded stacks
# NAME-homeserver.folded, NAME-clients.folded (large; not committed).
# RENDER_ONLY=1 skips the build and the recording and renders the existing
# NAME.perf.data and NAME.log again.
#
# Needs root (or kernel.perf_event_paranoid <= -1) for system-wide sampling,
# perf, and inferno (`cargo install inferno`). Samples every CPU at 499 Hz
# (cpu-clock: no hardware counters needed) with DWARF call stacks, but only
# while the benchmark runs SECTION (it turns perf on and off through
# `--perf-control`), so set-up and other runs are left out.
set -euo pipefail

section=${1:?usage: benchmarks/profile.sh SECTION [OUTPUT_DIRECTORY]}
root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
output=${2:-$root/benchmarks/profiles}
data_directory=${PROFILE_DATA:-/tmp}
target=${CARGO_TARGET_DIR:-$root/target}
name=${section//:/-}

case $section in
    throughput:*:*) part=(--part throughput) ;;
    commits:*) part=(--part scaling --commits-only --sizes "${section#commits:}") ;;
    *) echo "unknown section $section" >&2; exit 2 ;;
esac

# Stacks deeper than the copied bytes are cut short (the flame graph then shows
# them under "[unknown]"); more bytes, more data: about
# frequency x CPUs x stack bytes per second of the section.
frequency=${PERF_FREQUENCY:-499}
stack_bytes=${PERF_STACK_BYTES:-32768}

mkdir -p "$output"
data=$data_directory/$name.perf.data
log=$output/$name.log
# RENDER_ONLY=1: summarise and draw again from the recorded data and log.
if [[ ${RENDER_ONLY:-0} != 1 ]]; then
    # The release build with line tables (Cargo.toml, [profile.profiling]).
    (cd "$root" && cargo build --profile profiling -p conclave-benchmarks)
    bench=$target/profiling/conclave-bench

    fifos=$(mktemp -d)
    trap 'rm -rf "$fifos"' EXIT
    mkfifo "$fifos/control" "$fifos/ack"
    # Held open read-write here, so that neither perf nor the benchmark blocks
    # opening them.
    exec {control_fd}<>"$fifos/control" {ack_fd}<>"$fifos/ack"

    perf record -a -e cpu-clock -F "$frequency" -g --call-graph "dwarf,$stack_bytes" -D -1 \
        --control "fd:$control_fd,$ack_fd" -o "$data" -- \
        "$bench" "${part[@]}" --database postgres --server-process \
        --perf-control "$fifos" --perf-section "$section" 2>&1 | tee "$log"
fi

bench_pid=$(sed -n 's/.*perf: benchmark in process \([0-9]*\).*/\1/p' "$log" | head -n 1)
# The homeserver started last before the section began (each run or part
# starts its own).
server_pid=$(awk '/homeserver in process/ { pid = $4 } /perf: recording/ { print pid; exit }' "$log")
[[ -n $server_pid ]] || { echo "no homeserver process in $log" >&2; exit 1; }

# Folded stacks (one line per distinct stack: frames joined by ";", then the
# sample count) of the homeserver and of the benchmark's own process.
perf script -i "$data" --pid "$server_pid" 2>/dev/null | inferno-collapse-perf \
    > "$data_directory/$name-homeserver.folded"
if [[ -n $bench_pid ]]; then
    perf script -i "$data" --pid "$bench_pid" 2>/dev/null | inferno-collapse-perf \
        > "$data_directory/$name-clients.folded"
fi

# The frames with the most samples (weighted by perf's period), generic
# arguments left out of their names:
# "self" counts the samples in the frame itself, "total" those in it or below.
top_frames() {
    perl -e '
        my (%self, %total, $samples);
        while (<STDIN>) {
            chomp;
            my ($stack, $count) = /^(.*) (\d+)$/ or next;
            1 while $stack =~ s/([\w}])<[^<>]*>/$1/g;
            my @frames = split /;/, $stack;
            shift @frames;    # the thread name
            next unless @frames;
            $samples += $count;
            $self{$frames[-1]} += $count;
            my %seen;
            $total{$_} += $count for grep { !$seen{$_}++ } @frames;
        }
        exit unless $samples;
        my %ours = map { $_ => $total{$_} } grep { /conclave|openmls|sqlx|sea_orm|serde_json|tonic|h2::/ } keys %total;
        for my $kind (["self", \%self], ["total", \%total],
                      ["total, frames of conclave, openmls, sqlx, sea-orm, serde_json, tonic, h2", \%ours]) {
            my ($label, $counts) = @$kind;
            printf "  by %s time:\n", $label;
            my @top = (sort { $counts->{$b} <=> $counts->{$a} } keys %$counts)[0 .. 29];
            printf "    %5.1f%%  %s\n", 100 * $counts->{$_} / $samples, substr($_, 0, 150)
                for grep { defined } @top;
        }'
}

{
    echo "Section $section; homeserver pid $server_pid; benchmark (clients) pid ${bench_pid:-?}"
    echo
    echo "CPU samples per process (all CPUs, while the section ran):"
    perf script -i "$data" -F comm,pid 2>/dev/null |
        awk -v server="$server_pid" -v bench="${bench_pid:-none}" '
            NF >= 2 {
                pid = $NF; comm = $1
                if (pid == server) who = "homeserver"
                else if (pid == bench) who = "benchmark clients"
                else if (comm ~ /^postgres/) who = "PostgreSQL"
                else if (comm == "swapper") who = "idle"
                else who = "other (" comm ")"
                samples[who]++; total++
            }
            END { for (who in samples) printf "  %6.1f%%  %7d  %s\n", 100 * samples[who] / total, samples[who], who }' |
        sort -rn
    echo
    echo "Homeserver, top frames"
    top_frames < "$data_directory/$name-homeserver.folded"
    if [[ -n $bench_pid ]]; then
        echo
        echo "Benchmark clients, top frames"
        top_frames < "$data_directory/$name-clients.folded"
    fi
} > "$output/$name-summary.txt"

# Frames narrower than 2 pixels (of 1,200) are left out: the SVGs stay small.
inferno-flamegraph --title "homeserver, $section" --minwidth 2 \
    < "$data_directory/$name-homeserver.folded" > "$output/$name-homeserver.svg"
if [[ -n $bench_pid ]]; then
    inferno-flamegraph --title "benchmark clients, $section" --minwidth 2 \
        < "$data_directory/$name-clients.folded" > "$output/$name-clients.svg"
fi
echo "wrote $output/$name-summary.txt and flame graphs; perf data in $data"
