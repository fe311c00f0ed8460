// Embeddings of one shard with one model: DNABERT-S of the nucleotide frames or ESM-2 of the
// proteins (model_meta.kind: dnabert or esm). main.nf includes it twice, as EXTRACT_DNABERT and
// EXTRACT_ESM. GPU when the profile gives the `gpu` label an accelerator: the task then uses the
// GPUs it was granted (--gpus) and its CPUs for torch (--threads). Device, precision and batch
// size come through ext.args, and conf/modules.config stores the result under a key of everything
// that determines it (model commit or folder digest, ext.args, virnucpro version, shard md5).
// The model folder is staged as Nextflow stages any input: a symlink to the store (local and
// Slurm executors: read in place, never copied; containers get it mounted), a download per task
// on AWS/Google Batch. compile_cache: the store's compile-cache folder (main.nf passes [] where
// the store is object storage), where torch.compile keeps its Inductor and Triton caches, so a
// later task on a node starts with compiled kernels instead of compiling again. HOME is made
// writable for containers run as -u uid:gid (HOME=/ there). Output name: `${prefix}.${model_meta.kind}.h5`, prefix: ext.prefix, else the shard.
// Versions: storeDir keeps only val and path outputs (Nextflow skips the store for an eval output),
// so the versions are written to files stored with the content: a store hit reports the ones that made it.
process EXTRACT {
    tag "${meta.shard}"
    label 'gpu'

    input:
    tuple val(meta), path(fasta)
    tuple val(model_meta), path(model)
    path(compile_cache)

    output:
    tuple val(meta), path("${task.ext.prefix ?: meta.shard}.${model_meta.kind}.h5"), emit: embeddings
    tuple val("${task.process}"), val('virnucpro'), path('virnucpro.version'), emit: versions_virnucpro, topic: versions
    tuple val("${task.process}"), val('torch'), path('torch.version'), emit: versions_torch, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    def prefix = task.ext.prefix ?: meta.shard
    def gpus = task.accelerator ? "--gpus ${task.accelerator.request}" : ''
    def caches = compile_cache ? "export TORCHINDUCTOR_CACHE_DIR=\$PWD/${compile_cache}/inductor TRITON_CACHE_DIR=\$PWD/${compile_cache}/triton" : ''
    """
    [ -w "\${HOME:-/}" ] || export HOME="\$PWD"
    ${caches}
    virnucpro-extract ${model_meta.kind} --input ${fasta} --output ${prefix}.${model_meta.kind}.h5 --model ${model} --threads ${task.cpus} ${gpus} ${args}
    virnucpro-extract --version > virnucpro.version
    python3 -c 'from importlib.metadata import version; print(version(\"torch\"))' > torch.version
    """

    stub:
    """
    touch ${task.ext.prefix ?: meta.shard}.${model_meta.kind}.h5
    virnucpro-extract --version > virnucpro.version
    python3 -c 'from importlib.metadata import version; print(version(\"torch\"))' > torch.version
    """
}
