// Embeddings of one shard with one model: DNABERT-S of the nucleotide frames or ESM-2 of the
// proteins (model_meta.kind: dnabert or esm). main.nf includes it twice, as EXTRACT_DNABERT and
// EXTRACT_ESM. GPU when the profile gives the `gpu` label an accelerator: the task then uses the
// GPUs it was granted (--gpus) and its CPUs for torch (--threads). Device, precision and batch
// size come through ext.args, and conf/modules.config stores the result under a key of everything
// that determines it (model commit or folder digest, ext.args, virnucpro version, shard md5).
process EXTRACT {
    tag "${meta.shard}"
    label 'gpu'

    input:
    tuple val(meta), path(fasta)
    tuple val(model_meta), path(model)

    output:
    tuple val(meta), path("${meta.shard}.${model_meta.kind}.h5"), emit: embeddings
    path 'versions.yml', emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    def gpus = task.accelerator ? "--gpus ${task.accelerator.request}" : ''
    """
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
