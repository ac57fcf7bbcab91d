#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
#
# The man pages and bash completions against the programs (no root, a few seconds):
# every page renders without warnings and carries the program's version; every option
# its --help defines is listed in its page (a .TP tag), every other one it mentions
# appears in it; every keymapctl and keymap-cli command of the usage is listed in the
# page and offered by the completion;
# each completion script parses, registers itself and offers the options of --help;
# keymapctl's completes file prefixes (-f) and SECTION.KEY names (config, set) from
# keymapd --print-config.
#
# usage: manpages.sh PROGRAM... PAGES_DIR COMPLETION_DIR
#   PROGRAM: the built keymapd, keymapctl, keymap-cli, keymap-bench, keymap-placer
#   (whichever are built), told apart by their names.
# Exit 77 (skipped) when neither man nor groff is installed.
set -euo pipefail

if (($# < 3)); then
	echo "usage: $0 PROGRAM... PAGES_DIR COMPLETION_DIR" >&2
	exit 2
fi
args=("$@")
compdir=${args[$# - 1]}
pagedir=${args[$# - 2]}
progs=("${args[@]:0:$# - 2}")

if command -v man >/dev/null; then
	render='man'
elif command -v groff >/dev/null; then
	render='groff'
else
	echo "SKIP: neither man nor groff is installed"
	exit 77
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0
fail() {
	echo "FAIL: $*"
	failures=$((failures + 1))
}

declare -A page_of=([keymapd]=keymapd.8 [keymapctl]=keymapctl.8 [keymap-cli]=keymap-cli.1
	[keymap-bench]=keymap-bench.1 [keymap-placer]=keymap-placer.8)
declare -A prog_of=()
for p in "${progs[@]}"; do
	name=${p##*/}
	if [[ -z ${page_of[$name]-} ]]; then
		echo "$0: $p: not one of ${!page_of[*]}" >&2
		exit 2
	fi
	[[ -x $p ]] || { fail "$p: not an executable"; continue; }
	prog_of[$name]=$p
done

# A page's text as written, without roff escapes for fonts, hyphens and zero widths.
plain() {
	sed -e 's/\\f[BIRP]//g' -e 's/\\f(..//g' -e 's/\\f\[[^]]*\]//g' -e 's/\\-/-/g' \
		-e 's/\\&//g' -e 's/\\%//g' -e 's/\\(aq/'"'"'/g' "$1"
}

# The tags of a page's lists: the line after each .TP or .TQ, without its font macro
# and quotes.
tags() {
	awk 'tag { sub(/^\.[A-Z]+ */, ""); gsub(/"/, ""); print; tag = 0 }
		/^\.(TP|TQ)/ { tag = 1 }' "$1"
}

# Whether a line of file $1 starts with the command $2 (a tag that lists it).
starts_line() {
	local text post='($|[^A-Za-z0-9_-])'
	text=$'\n'$(<"$1")
	[[ $text =~ $'\n'"$2"$post ]]
}

# Whether the text in file $1 has $2 as a whole word (options and commands included).
# Without a process per word: the file is read once.
page_file='' page_text=''
has_word() {
	local pre='(^|[^A-Za-z0-9_-])' post='($|[^A-Za-z0-9_-])'
	if [[ $1 != "$page_file" ]]; then
		page_file=$1
		page_text=$(<"$1")
	fi
	[[ $page_text =~ $pre"$2"$post ]]
}

# 1. Rendering, without warnings, and the version.
for page in "$pagedir"/*.[18]; do
	[[ -e $page ]] || continue
	# The page on stdout, the warnings on stderr: there must be none.
	if [[ $render == man ]]; then
		text=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l "$page" 2>"$tmp/warn") ||
			fail "${page##*/}: man failed"
	else
		text=$(groff -man -ww -Tutf8 -P-cbou "$page" 2>"$tmp/warn") || fail "${page##*/}: groff failed"
	fi
	[[ ! -s $tmp/warn ]] || fail "${page##*/}: warnings: $(<"$tmp/warn")"
	[[ $text == *NAME* && $text == *SYNOPSIS* ]] || fail "${page##*/}: renders no NAME/SYNOPSIS"
	! grep -q '@[A-Z_]*@' "$page" || fail "${page##*/}: unsubstituted @VARIABLE@"
done
for name in "${!prog_of[@]}"; do
	page=$pagedir/${page_of[$name]}
	[[ -f $page ]] || { fail "$name: no page ${page_of[$name]} in $pagedir"; continue; }
	version=$("${prog_of[$name]}" --version | awk 'NR == 1 { print $2 }')
	grep -qE "^\.TH .*\"keymap $version\"" "$page" ||
		fail "${page##*/}: .TH does not carry the version $version ($name --version)"
done

# 2. Every option of --help in the page: those --help defines (at the start of a line)
# in a tag of a list (.TP), the others it mentions (a command's own, another program's)
# anywhere.
for name in "${!prog_of[@]}"; do
	page=$pagedir/${page_of[$name]}
	[[ -f $page ]] || continue
	text_file=$tmp/${page##*/}.txt
	plain "$page" >"$text_file"
	tags "$text_file" >"$text_file.tags"
	"${prog_of[$name]}" --help >"$tmp/help" 2>&1 || fail "$name --help: exit status $?"
	defined=$({
		grep -oE -- '^ +(-[A-Za-z], )?--?[A-Za-z][a-z0-9-]*' "$tmp/help" |
			grep -oE -- '--?[A-Za-z][a-z0-9-]*'
		echo --version
	} | sort -u)
	mentioned=$({
		grep -oE -- '--[a-z][a-z0-9-]*' "$tmp/help"
		grep -oE -- '(^|[[ ])-[A-Za-z]([], ]|$)' "$tmp/help" | grep -oE -- '-[A-Za-z]'
	} | sort -u)
	[[ -n $defined ]] || fail "$name --help: no option found"
	for o in $defined; do
		has_word "$text_file.tags" "$o" ||
			fail "${page##*/}: option $o ($name --help) not listed (.TP)"
	done
	for o in $mentioned; do
		has_word "$text_file" "$o" || fail "${page##*/}: option $o ($name --help) missing"
	done
done

# 3. Completion scripts: they parse and register.
for s in keymapctl keymap-cli keymapd; do
	[[ $s == keymapd && -z ${prog_of[keymapd]-} ]] && continue
	f=$compdir/$s
	[[ -f $f ]] || { fail "completion $f missing"; continue; }
	bash -n "$f" || fail "completion $s: bash -n failed"
	bash --norc --noprofile -c 'source "$1" && complete -p "$2"' _ "$f" "$s" >/dev/null 2>&1 ||
		fail "completion $s: complete -p $s after sourcing it fails"
done

# The words completion $1 offers for the command line "$2..." (the last one being
# completed), one per line.
complete_words() {
	local script=$1
	shift
	(
		set +euo pipefail
		# shellcheck disable=SC1090
		source "$compdir/$script" >/dev/null 2>&1
		# The function of "complete -F FN NAME", with builtins only (PATH may be empty).
		read -ra spec <<<"$(complete -p "$script" 2>/dev/null)"
		fn=''
		for ((i = 0; i + 1 < ${#spec[@]}; i++)); do
			[[ ${spec[i]} == -F ]] && fn=${spec[i + 1]}
		done
		[[ -n $fn ]] || exit 0
		COMP_WORDS=("$@")
		COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
		COMP_LINE="$*"
		COMP_POINT=${#COMP_LINE}
		COMPREPLY=()
		"$fn" "$script" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}" \
			2>/dev/null
		printf '%s\n' "${COMPREPLY[@]}"
	)
}

# Whether the list of words (one per line) $1 holds the word $2.
offers() {
	[[ $'\n'$1$'\n' == *$'\n'"$2"$'\n'* ]]
}

# 4. keymapctl: its commands in the page and the completion; its options.
if [[ -n ${prog_of[keymapctl]-} ]]; then
	"${prog_of[keymapctl]}" --help >"$tmp/help"
	text_file=$tmp/keymapctl.8.txt
	# Command lines: two blanks, the command (one word, or two for key add, cluster drain...),
	# then its arguments ([...], UPPERCASE, /...), a description after two blanks, or nothing.
	cmds=$(awk '
		function args(t) { return t == "" || t ~ /^  / || t ~ /^ [[A-Z\/]/ }
		/^(commands|cluster commands)/ { on = 1; next }
		/^options/ { on = 0 }
		on && /^  [a-z]/ {
			split(substr($0, 3), w, " ")
			rest = substr($0, 3 + length(w[1]))
			if (args(rest)) {
				print w[1]
			} else if (rest ~ /^ [a-z][a-z-]*/ && args(substr(rest, 2 + length(w[2])))) {
				print w[1] " " w[2]
			}
		}' "$tmp/help")
	[[ $(wc -l <<<"$cmds") -ge 25 ]] || fail "keymapctl --help: only $(wc -l <<<"$cmds") commands found"
	top=$(complete_words keymapctl keymapctl '')
	while read -r cmd; do
		[[ -n $cmd ]] || continue
		starts_line "$text_file.tags" "$cmd" || fail "keymapctl.8: command '$cmd' not listed (.TP)"
		first=${cmd%% *}
		offers "$top" "$first" || fail "completion keymapctl: command '$first' not offered"
		if [[ $cmd == *' '* ]]; then
			offers "$(complete_words keymapctl keymapctl "$first" '')" "${cmd#* }" ||
				fail "completion keymapctl: '$cmd' not offered after '$first'"
		fi
	done <<<"$cmds"
	got=$(complete_words keymapctl keymapctl st | sort | tr '\n' ' ')
	[[ $got == 'stats status ' ]] || fail "completion keymapctl: 'keymapctl st' offers '$got', not 'stats status'"
	# The options before the command.
	all=$(complete_words keymapctl keymapctl -)
	sed -n '/^options/,$p' "$tmp/help" | grep -oE -- '^  +(-[A-Za-z], )?--[a-z-]+' |
		grep -oE -- '-[A-Za-z]|--[a-z-]+' >"$tmp/opts"
	while read -r o; do
		offers "$all" "$o" || fail "completion keymapctl: option $o not offered"
	done <"$tmp/opts"
	# -f: the prefixes under RUNTIME_DIR/dpdk.
	mkdir -p "$tmp/run/dpdk/kmtest-a" "$tmp/run/dpdk/kmtest-b"
	got=$(RUNTIME_DIRECTORY=$tmp/run complete_words keymapctl keymapctl -f kmtest | sort | tr '\n' ' ')
	[[ $got == 'kmtest-a kmtest-b ' ]] || fail "completion keymapctl: '-f kmtest' offers '$got'"
	got=$(RUNTIME_DIRECTORY=$tmp/run complete_words keymapctl keymapctl --file-prefix = kmtest-b)
	[[ $got == kmtest-b ]] || fail "completion keymapctl: '--file-prefix=kmtest-b' offers '$got'"
	# config and set: nothing without keymapd in PATH, its keys with it.
	mkdir -p "$tmp/bin" "$tmp/empty"
	got=$(PATH=$tmp/empty complete_words keymapctl keymapctl config net.)
	[[ -z $got ]] || fail "completion keymapctl: 'config net.' without keymapd offers '$got'"
	if [[ -n ${prog_of[keymapd]-} ]]; then
		ln -s "$(cd "$(dirname "${prog_of[keymapd]}")" && pwd)/keymapd" "$tmp/bin/keymapd"
		got=$(PATH=$tmp/bin:$PATH complete_words keymapctl keymapctl config net.)
		offers "$got" net.ip || fail "completion keymapctl: 'config net.' offers '$got', no net.ip"
		got=$(PATH=$tmp/bin:$PATH complete_words keymapctl keymapctl -T 2 set workers.bur)
		[[ $got == workers.burst ]] || fail "completion keymapctl: 'set workers.bur' offers '$got'"
	fi
fi

# 5. keymap-cli: its commands in the page and the completion; its options.
if [[ -n ${prog_of[keymap-cli]-} ]]; then
	"${prog_of[keymap-cli]}" --help >"$tmp/help"
	text_file=$tmp/keymap-cli.1.txt
	cmds=$(awk '/^commands:/ { on = 1; next } /^$/ { on = 0 } on && /^  [a-z]/ { print $1 }' "$tmp/help")
	[[ $(wc -l <<<"$cmds") -ge 8 ]] || fail "keymap-cli --help: only $(wc -l <<<"$cmds") commands found"
	top=$(complete_words keymap-cli keymap-cli -h 127.0.0.1 '')
	for cmd in $cmds; do
		starts_line "$text_file.tags" "$cmd" || fail "keymap-cli.1: command '$cmd' not listed (.TP)"
		offers "$top" "$cmd" || fail "completion keymap-cli: command '$cmd' not offered"
	done
	all=$(complete_words keymap-cli keymap-cli -)
	sed -n '/^options:/,$p' "$tmp/help" | grep -oE -- '^  +-(-[a-z-]+|[A-Za-z])' |
		tr -d ' ' >"$tmp/opts"
	while read -r o; do
		offers "$all" "$o" || fail "completion keymap-cli: option $o not offered"
	done <"$tmp/opts"
	offers "$(complete_words keymap-cli keymap-cli bench-lite --get)" --get-ratio ||
		fail "completion keymap-cli: 'bench-lite --get' does not offer --get-ratio"
fi

# 6. keymapd: its options; -o SECTION.KEY= from its own --print-config.
if [[ -n ${prog_of[keymapd]-} ]]; then
	all=$(complete_words keymapd keymapd -)
	for o in $("${prog_of[keymapd]}" --help | grep -oE -- '^  +(-[A-Za-z], )?--[a-z-]+' |
		grep -oE -- '-[A-Za-z]|--[a-z-]+') --version; do
		offers "$all" "$o" || fail "completion keymapd: option $o not offered"
	done
	got=$(PATH=$tmp/empty complete_words keymapd "${prog_of[keymapd]}" -o log.lev)
	[[ $got == log.level= ]] || fail "completion keymapd: '-o log.lev' offers '$got'"
fi

if ((failures > 0)); then
	echo "$failures failure(s)"
	exit 1
fi
echo "ok: pages ${!prog_of[*]} and their completions"
