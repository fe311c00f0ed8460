// ESM-2 embedding of one protein shard (GPU when the `gpu` profile gives the label one).
// Stored under a key of everything that determines the result: model key (id@revision, or the
// digest of a local folder), precision, virnucpro version and the shard's md5.
process EXTRACT_ESM {
    tag "${meta.shard}"
    label 'gpu'
    storeDir "${params.store_dir}/embeddings/esm/${meta.esm_key}/${params.precision}/virnucpro-${workflow.manifest.version}/${meta.protein_md5}"

    input:
    tuple val(meta), path(fasta)
    path model

    output:
    tuple val(meta), path('esm.h5'), emit: embeddings
    path 'versions.yml', emit: versions

    script:
    def batch_tokens = params.batch_tokens ? "--batch_tokens ${params.batch_tokens}" : ''
    def gpus = params.gpus ? "--gpus ${params.gpus}" : ''
    def args = task.ext.args ?: ''
    """
    virnucpro-extract esm --input ${fasta} --output esm.h5 --model ${model} --device ${params.device} --precision ${params.precision} ${batch_tokens} ${gpus} ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: \$(python3 -c 'import virnucpro; print(virnucpro.__version__)')
        torch: \$(python3 -c 'import torch; print(torch.__version__)')
    END_VERSIONS
    """

    stub:
    """
    touch esm.h5

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: stub
    END_VERSIONS
    """
}
