// Join one shard's DNABERT-S and ESM-2 embeddings into 3328-wide features (CPU).
// Keyed like the embeddings it is made from: both model keys, precision, version, both md5s.
process MERGE {
    tag "${meta.shard}"
    label 'process_single'
    storeDir "${params.store_dir}/features/${meta.dnabert_key}/${meta.esm_key}/${params.precision}/virnucpro-${workflow.manifest.version}/${meta.nucleotide_md5}-${meta.protein_md5}"

    input:
    tuple val(meta), path(dnabert), path(esm)

    output:
    tuple val(meta), path('features.h5'), emit: features
    path 'versions.yml', emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    virnucpro-merge --nucleotide ${dnabert} --protein ${esm} --output features.h5 ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: \$(python3 -c 'import virnucpro; print(virnucpro.__version__)')
    END_VERSIONS
    """

    stub:
    """
    touch features.h5

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: stub
    END_VERSIONS
    """
}
