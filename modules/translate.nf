// Chunk, six-frame translate and scatter one input FASTA into shard pairs (CPU).
// The md5 of every shard is the content key of the embeddings stored for it downstream.
// ext.args (conf/modules.config): --chunk_size and --shard_size.
process TRANSLATE {
    tag "${meta.id}"
    label 'process_medium'

    input:
    tuple val(meta), path(fasta)

    output:
    tuple val(meta), path('shards/*.nucleotide.fa'), path('shards/*.protein.fa'), path('checksums.md5'), emit: shards
    tuple val(meta), path('shards/*.sequences.tsv'), emit: sequences
    tuple val("${task.process}"), val('virnucpro'), eval('virnucpro-translate --version'), emit: versions_virnucpro, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    """
    virnucpro-translate --input ${fasta} --outdir shards --workers ${task.cpus} ${args}
    ( cd shards && md5sum -- *.nucleotide.fa *.protein.fa ) > checksums.md5
    """

    stub:
    """
    mkdir -p shards
    touch shards/${meta.id}.nucleotide.fa shards/${meta.id}.protein.fa shards/${meta.id}.sequences.tsv
    ( cd shards && md5sum -- *.nucleotide.fa *.protein.fa ) > checksums.md5
    """
}
