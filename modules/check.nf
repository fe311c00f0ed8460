// virnucpro-check on the GPU the extraction tasks will get, before any of them starts: versions,
// device, compile, both models loading, a few frames on the device against the CPU, throughput.
// main.nf runs it in a test run (tiny models) that asks for a GPU and holds every extraction
// back until it passes, so a node that cannot run the pipeline fails in a minute, with its
// reason, instead of in the first extraction task. Its report (check.txt) is printed to the
// task's log when it fails. HOME and the compile caches as in modules/extract.nf.
process CHECK {
    tag "${dnabert_meta.id}"
    label 'gpu'

    input:
    tuple val(dnabert_meta), path(dnabert_model)
    tuple val(esm_meta), path(esm_model)
    path(compile_cache)

    output:
    path 'check.txt', emit: report
    tuple val("${task.process}"), val('virnucpro'), eval('virnucpro-check --version'), emit: versions_virnucpro, topic: versions
    tuple val("${task.process}"), val('torch'), eval("python3 -c 'from importlib.metadata import version; print(version(\"torch\"))'"), emit: versions_torch, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    def caches = compile_cache ? "export TORCHINDUCTOR_CACHE_DIR=\$PWD/${compile_cache}/inductor TRITON_CACHE_DIR=\$PWD/${compile_cache}/triton" : ''
    """
    [ -w "\${HOME:-/}" ] || export HOME="\$PWD"
    ${caches}
    virnucpro-check --dnabert_model ${dnabert_model} --esm_model ${esm_model} ${args} > check.txt || { status=\$?; cat check.txt >&2; exit \$status; }
    cat check.txt
    """

    stub:
    """
    echo 'verdict: OK (stub)' > check.txt
    """
}
