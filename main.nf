#!/usr/bin/env nextflow
/*
 * virnucpro: the VirNucPro viral-sequence identifier as a Nextflow DSL2 pipeline (SPEC section 4).
 *
 *   input FASTA(s) -> TRANSLATE (chunk, six-frame, scatter into shards)
 *     -> EXTRACT_DNABERT + EXTRACT_ESM per shard (label 'gpu')
 *     -> MERGE per shard -> CLASSIFY per input file (its shards gathered, in order): the two
 *        prediction tables of the original and a per-sequence summary, published to outdir
 *     -> REPORT per input file: a self-contained report.html beside the tables
 *
 * Every process calls the bin/ tools. Models, embeddings and features go to `params.store_dir`
 * (storeDir) under a key of everything that determines their content, so a rerun, or a run with
 * more input, recomputes only what is new and a cache hit can never be stale.
 */

include { TRANSLATE                     } from './modules/translate'
include { MAKE_TEST_MODELS              } from './modules/make_test_models'
include { FETCH_MODEL as FETCH_DNABERT  } from './modules/fetch_model'
include { FETCH_MODEL as FETCH_ESM      } from './modules/fetch_model'
include { EXTRACT_DNABERT               } from './modules/extract_dnabert'
include { EXTRACT_ESM                   } from './modules/extract_esm'
include { MERGE                         } from './modules/merge'
include { CLASSIFY                      } from './modules/classify'
include { REPORT                        } from './modules/report'

// The tools' `<stem>` rule (SPEC 3): name without `.gz` and without a FASTA extension.
def fastaStem(String name) {
    def base = name.endsWith('.gz') ? withoutSuffix(name, '.gz') : name
    def ext = ['.fa', '.fasta', '.fna', '.ffn', '.faa', '.fas'].find { suffix -> base.endsWith(suffix) }
    return ext ? withoutSuffix(base, ext) : base
}

def withoutSuffix(String name, String suffix) {
    return name.substring(0, name.length() - suffix.length())
}

// `md5sum` lines (`<hash>  <name>`) -> [name: hash]
def readChecksums(checksums) {
    return checksums.readLines().findAll { line -> line.trim() }.collectEntries { line ->
        def parts = line.trim().split(/\s+/, 2)
        [parts[1].replaceFirst(/^\*/, ''), parts[0]]
    }
}

// One [meta, nucleotide, protein] per shard pair of a TRANSLATE task, paired by shard name; meta
// carries the content keys of what is computed from the shard (its md5s, the model keys).
def shardItems(meta, nucleotides, proteins, checksums, dnabert_key, esm_key) {
    def md5 = readChecksums(checksums)
    def nucleotide_files = [nucleotides].flatten().sort { f -> f.name }
    def protein_files = [proteins].flatten().collectEntries { f -> [withoutSuffix(f.name, '.protein.fa'), f] }
    return nucleotide_files.collect { nucleotide ->
        def shard = withoutSuffix(nucleotide.name, '.nucleotide.fa')
        def protein = protein_files[shard]
        def shard_meta = meta + [shard: shard, shard_count: nucleotide_files.size(),
                                 nucleotide_md5: md5[nucleotide.name], protein_md5: md5[protein.name],
                                 dnabert_key: dnabert_key, esm_key: esm_key]
        [shard_meta, nucleotide, protein]
    }
}

// The gathered features of one input file, in shard order (groupTuple gives arrival order).
def inShardOrder(shards, features) {
    return [shards, features].transpose().sort { pair -> pair[0] }.collect { pair -> pair[1] }
}

// md5 of a local model folder: every file's relative name and bytes, in name order (hidden
// files such as a hub download's .cache/ left out). Read once per run.
def folderDigest(folder) {
    def digest = java.security.MessageDigest.getInstance('MD5')
    def files = []
    folder.eachFileRecurse(groovy.io.FileType.FILES) { f -> files << f }
    def named = files.collect { f -> [folder.relativize(f).toString(), f] }
        .findAll { entry -> !entry[0].split('/').any { part -> part.startsWith('.') } }
        .sort { entry -> entry[0] }
    named.each { entry ->
        digest.update("${entry[0]}\n".toString().getBytes('UTF-8'))
        entry[1].withInputStream { stream -> stream.eachByte(1 << 20) { buffer, n -> digest.update(buffer, 0, n) } }
    }
    return digest.digest().encodeHex().toString()
}

def isLocalModel(String model) {
    return java.nio.file.Files.isDirectory(file(model))
}

// The store key of a model: `<id with / as -->@<revision>` for a hub id (FETCH_MODEL snapshots
// exactly that into the store), `local-<md5 of the folder>` for a local folder.
def modelKey(String model, String revision) {
    if (isLocalModel(model)) {
        return "local-${folderDigest(file(model))}".toString()
    }
    return "${model.replace('/', '--')}@${revision}".toString()
}

// A boolean param, whether it came from a config file (true) or the command line ('true').
def flag(value) {
    return value.toString().toBoolean()
}

def validateParameters() {
    if (!params.input) {
        error "--input is required: a FASTA file (plain or .gz) or a glob of them, e.g. --input 'contigs/*.fa'"
    }
    if (!(params.chunk_size.toString() in ['300', '500'])) {
        log.warn "--chunk_size ${params.chunk_size}: the published classifiers were trained on 300 or 500"
    }
    if (!(params.precision in ['fp32', 'bf16', 'fp16'])) {
        error "--precision must be fp32, bf16 or fp16, got '${params.precision}'"
    }
    if (!(params.device ==~ /auto|cpu|cuda(:\d+)?/)) {
        error "--device must be auto, cpu, cuda or cuda:N, got '${params.device}'"
    }
    if (!params.shard_size.toString().isInteger() || params.shard_size.toString().toInteger() < 0) {
        error "--shard_size must be a whole number >= 0 (frames per shard; 0: one shard), got '${params.shard_size}'"
    }
    if (!flag(params.make_test_models) && !params.classifier) {
        error "--classifier is required: ${params.chunk_size}_model.pth from the VirNucPro repository (a path or URL); see README, section 'The Nextflow pipeline'"
    }
    def schema = new groovy.json.JsonSlurper().parseText(file("${projectDir}/nextflow_schema.json").text)
    def known = schema['$defs'].values().collectMany { group -> group['properties'].keySet() as List }
    def unknown = params.keySet().findAll { name -> !(name in known) && !name.contains('-') }
    if (unknown) {
        log.warn "unknown parameter(s), ignored: ${unknown.sort().join(', ')} (see nextflow_schema.json)"
    }
}

workflow {
    validateParameters()
    def version = workflow.manifest.version

    // One item per input file: [[id: stem], file]. Two inputs with one stem would overwrite each other.
    def ch_input = channel.fromPath(params.input, checkIfExists: true)
        .map { fasta -> [[id: fastaStem(fasta.name)], fasta] }
        .toList()
        .flatMap { items ->
            def ids = items.collect { item -> item[0].id }
            def repeated = ids.findAll { id -> ids.count(id) > 1 }.unique()
            if (repeated) {
                error "input files with the same name stem would overwrite each other's results: ${repeated.join(', ')}"
            }
            items
        }

    // Models: tiny test models, local folders as they are, or hub ids snapshotted into the store.
    // Their keys (value channels) go into every shard's meta, and from there into the store paths.
    def dnabert_model
    def esm_model
    def classifier
    def dnabert_key
    def esm_key
    def ch_versions = channel.empty()
    if (flag(params.make_test_models)) {
        MAKE_TEST_MODELS()
        dnabert_model = MAKE_TEST_MODELS.out.dnabert.first()
        esm_model = MAKE_TEST_MODELS.out.esm.first()
        classifier = params.classifier ? channel.value(file(params.classifier, checkIfExists: true)) : MAKE_TEST_MODELS.out.classifier.first()
        dnabert_key = dnabert_model.map { folder -> "test-${folderDigest(folder)}".toString() }
        esm_key = esm_model.map { folder -> "test-${folderDigest(folder)}".toString() }
        ch_versions = ch_versions.mix(MAKE_TEST_MODELS.out.versions)
    } else {
        def dnabert_name = modelKey(params.dnabert_model, params.dnabert_revision)
        def esm_name = modelKey(params.esm_model, params.esm_revision)
        log.info "model keys: DNABERT-S ${dnabert_name}, ESM-2 ${esm_name}"
        dnabert_key = channel.value(dnabert_name)
        esm_key = channel.value(esm_name)
        if (isLocalModel(params.dnabert_model)) {
            dnabert_model = channel.value(file(params.dnabert_model))
        } else {
            FETCH_DNABERT(channel.of([dnabert_name, params.dnabert_model, params.dnabert_revision]))
            dnabert_model = FETCH_DNABERT.out.model.map { key, folder -> folder }.first()
            ch_versions = ch_versions.mix(FETCH_DNABERT.out.versions)
        }
        if (isLocalModel(params.esm_model)) {
            esm_model = channel.value(file(params.esm_model))
        } else {
            FETCH_ESM(channel.of([esm_name, params.esm_model, params.esm_revision]))
            esm_model = FETCH_ESM.out.model.map { key, folder -> folder }.first()
            ch_versions = ch_versions.mix(FETCH_ESM.out.versions)
        }
        classifier = channel.value(file(params.classifier, checkIfExists: true))
    }
    log.info "virnucpro ${version}: precision ${params.precision}, store ${params.store_dir}"

    // Scatter: one item per shard pair, its meta carrying the content keys of what is made from it.
    TRANSLATE(ch_input)
    def ch_shards = TRANSLATE.out.shards
        .combine(dnabert_key)
        .combine(esm_key)
        .flatMap { meta, nucleotides, proteins, checksums, dnabert, esm ->
            shardItems(meta, nucleotides, proteins, checksums, dnabert, esm)
        }

    EXTRACT_DNABERT(ch_shards.map { meta, nucleotide, protein -> [meta, nucleotide] }, dnabert_model)
    EXTRACT_ESM(ch_shards.map { meta, nucleotide, protein -> [meta, protein] }, esm_model)
    MERGE(EXTRACT_DNABERT.out.embeddings.join(EXTRACT_ESM.out.embeddings))

    // Gather: each input file's features in shard order, released as soon as its last shard is merged.
    def ch_features = MERGE.out.features
        .map { meta, features -> [groupKey(meta.id, meta.shard_count), meta.shard, features] }
        .groupTuple()
        .map { id, shards, features -> [[id: id.toString()], inShardOrder(shards, features)] }
        .join(TRANSLATE.out.sequences)
    CLASSIFY(ch_features, classifier)
    REPORT(CLASSIFY.out.predictions.join(CLASSIFY.out.summary))

    ch_versions
        .mix(TRANSLATE.out.versions.first(), EXTRACT_DNABERT.out.versions.first(), EXTRACT_ESM.out.versions.first(),
             MERGE.out.versions.first(), CLASSIFY.out.versions.first(), REPORT.out.versions.first())
        .collectFile(name: 'software_versions.yml', storeDir: "${params.outdir}/pipeline_info", sort: true)
}
