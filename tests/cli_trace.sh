#!/usr/bin/env bash
# train --trace: a Chrome trace JSON document with every rank's spans. At
# sp = 2 on 2 ranks (FMM): per rank and step, each layer's forward and
# backward inside the step, the optimizer, halo exchanges in flight and
# far-field scans; the gradient buckets' all-reduce posted during the
# backward (it starts before the backward of layer 0 ends) with
# grad_overlap = 1, absent with grad_overlap = 0; a checkpoint span.
source "$(dirname "$0")/cli_lib.sh"
cd "$WORK"
make_corpus corpus.txt
"$MPL_BIN" prepare --quiet --in corpus.txt --out data.h5 > /dev/null
C=(-c "$MPL_SRC/configs/tiny.ini" --set data=data.h5 --set d_model=32 --set n_layer=3
   --set seq_len=64 --set batch=2 --set steps=3 --set warmup=1 --set attn=fmm --set band=8
   --set sp=2 --quiet)
check() { # trace.json overlap(0|1)
  python3 - "$1" "$2" <<'PY'
import json, sys
path, overlap = sys.argv[1], sys.argv[2] == "1"
d = json.load(open(path))
ev = [e for e in d["traceEvents"] if e["ph"] == "X"]
meta = [e for e in d["traceEvents"] if e["ph"] == "M"]
err = []
def need(c, msg):
    if not c: err.append(msg)
need({(e["pid"], e["args"]["name"]) for e in meta if e["name"] == "process_name"} == {(0, "rank 0"), (1, "rank 1")}, "process names")
for e in ev:
    need(e["ts"] >= 0 and e["dur"] >= 0 and e["pid"] in (0, 1) and e["tid"] in (0, 1), "bad event %r" % e)
for r in (0, 1):
    mine = [e for e in ev if e["pid"] == r]
    def named(n, tid=0): return [e for e in mine if e["name"] == n and e["tid"] == tid]
    def ends(e): return e["ts"] + e["dur"]
    for s in (1, 2, 3):
        st = named("step %d" % s)
        need(len(st) == 1, "rank %d: step %d spans %d" % (r, s, len(st)))
        if len(st) != 1: continue
        st = st[0]
        inside = [e for e in mine if e["tid"] == 0 and st["ts"] <= e["ts"] and ends(e) <= ends(st) + 1e-3]
        for l in range(3):
            for k in ("forward layer %d" % l, "backward layer %d" % l):
                need(sum(e["name"] == k for e in inside) == 1, "rank %d step %d: %s" % (r, s, k))
        need(sum(e["name"] == "optimizer" for e in inside) == 1, "rank %d step %d: optimizer" % (r, s))
        need(any(e["name"] == "scan" for e in inside), "rank %d step %d: no far-field scan" % (r, s))
        flight = [e for e in mine if e["tid"] == 1 and st["ts"] <= e["ts"] <= ends(st)]
        need(any(e["name"] == "p2p" for e in flight), "rank %d step %d: no halo in flight" % (r, s))
        buckets = [e for e in flight if e["name"] == "iallreduce"]
        b0 = [e for e in inside if e["name"] == "backward layer 0"]
        if overlap:
            need(len(buckets) == 1 and b0 and buckets[0]["ts"] < ends(b0[0]),
                 "rank %d step %d: buckets %r not posted before the backward of layer 0 ended %r" % (r, s, buckets, b0))
        else:
            need(not buckets, "rank %d step %d: buckets with grad_overlap=0" % (r, s))
    need(len(named("checkpoint 3")) == 1, "rank %d: checkpoint span" % r)
print("\n".join(err) if err else "%d spans" % len(ev))
sys.exit(1 if err else 0)
PY
}
for ov in 1 0; do
  "$MPIEXEC" --oversubscribe -n 2 "$MPL_BIN" train "${C[@]}" --set grad_overlap=$ov --set run_dir=r$ov \
    --trace t$ov.json > log$ov 2>&1 || bad "grad_overlap=$ov run failed: $(cat log$ov)"
  if out=$(check t$ov.json $ov); then ok "grad_overlap=$ov trace: $out"; else bad "grad_overlap=$ov trace: $out"; fi
  ls t$ov.json.* > /dev/null 2>&1 && bad "part files left: $(ls t$ov.json.*)"
done
# The same at 1 rank: a valid document, no exchanges in flight.
"$MPL_BIN" train "${C[@]}" --set sp=1 --set run_dir=r1r --trace one.json > log1r 2>&1 || bad "np 1 run failed: $(cat log1r)"
python3 -c "
import json, sys
d = json.load(open('one.json'))
ev = [e for e in d['traceEvents'] if e['ph'] == 'X']
sys.exit(not (sum(e['name'] == 'forward layer 0' for e in ev) == 3 and not any(e['tid'] == 1 for e in ev)))" &&
  ok "np 1 trace" || bad "np 1 trace: $(head -c 600 one.json)"
# An unwritable trace path fails before training, naming it.
"$MPL_BIN" train "${C[@]}" --set sp=1 --set run_dir=r2r --trace no/such/dir/t.json > log2r 2>&1
rc=$?
[ $rc -ne 0 ] && grep -q "error: .*no/such/dir/t.json" log2r && [ ! -e r2r/metrics.csv ] &&
  ok "unwritable --trace: exit $rc before the first step" ||
  bad "unwritable --trace: exit $rc, $(cat log2r)"
"$MPL_BIN" train "${C[@]}" --trace > log3r 2>&1
[ $? -eq 2 ] && grep -q "trace needs a file" log3r && ok "--trace without a file: usage error" || bad "--trace without file: $(cat log3r)"
finish
