// DNABERT-S embedding of one nucleotide shard (GPU when the `gpu` profile gives the label one).
// Stored under a key of everything that determines the result: model key (id@revision, or the
// digest of a local folder), precision, virnucpro version and the shard's md5.
process EXTRACT_DNABERT {
    tag "${meta.shard}"
    label 'gpu'
    storeDir "${params.store_dir}/embeddings/dnabert/${meta.dnabert_key}/${params.precision}/virnucpro-${workflow.manifest.version}/${meta.nucleotide_md5}"

    input:
    tuple val(meta), path(fasta)
    path model

    output:
    tuple val(meta), path('dnabert.h5'), emit: embeddings
    path 'versions.yml', emit: versions

    script:
    def batch_tokens = params.batch_tokens ? "--batch_tokens ${params.batch_tokens}" : ''
    def gpus = params.gpus ? "--gpus ${params.gpus}" : ''
    def args = task.ext.args ?: ''
    """
    virnucpro-extract dnabert --input ${fasta} --output dnabert.h5 --model ${model} --device ${params.device} --precision ${params.precision} ${batch_tokens} ${gpus} ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: \$(python3 -c 'import virnucpro; print(virnucpro.__version__)')
        torch: \$(python3 -c 'import torch; print(torch.__version__)')
    END_VERSIONS
    """

    stub:
    """
    touch dnabert.h5

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: stub
    END_VERSIONS
    """
}
