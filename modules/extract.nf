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
// writable for containers run as -u uid:gid (HOME=/ there).
process EXTRACT {
    tag "${meta.shard}"
    label 'gpu'

    input:
    tuple val(meta), path(fasta)
    tuple val(model_meta), path(model)
    path(compile_cache)

    output:
    tuple val(meta), path("${meta.shard}.${model_meta.kind}.h5"), emit: embeddings
    path 'versions.yml', emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    def gpus = task.accelerator ? "--gpus ${task.accelerator.request}" : ''
    def caches = compile_cache ? "export TORCHINDUCTOR_CACHE_DIR=\$PWD/${compile_cache}/inductor TRITON_CACHE_DIR=\$PWD/${compile_cache}/triton" : ''
    """
    [ -w "\${HOME:-/}" ] || export HOME="\$PWD"
    ${caches}
    virnucpro-extract ${model_meta.kind} --input ${fasta} --output ${meta.shard}.${model_meta.kind}.h5 --model ${model} --threads ${task.cpus} ${gpus} ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: \$(python3 -c 'import virnucpro; print(virnucpro.__version__)')
        torch: \$(python3 -c 'import torch; print(torch.__version__)')
    END_VERSIONS
    """

    stub:
    """
    touch ${meta.shard}.${model_meta.kind}.h5

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: stub
    END_VERSIONS
    """
}
