#!/usr/bin/env nextflow
/*
 * virnucpro: the VirNucPro viral-sequence identifier as a Nextflow DSL2 pipeline (SPEC section 4).
 *
 *   samples -> TRANSLATE (chunk, six-frame, scatter into shards)
 *     -> CHECK (virnucpro-check; a test run that asks for a GPU: extraction waits for it to pass)
 *     -> EXTRACT_DNABERT + EXTRACT_ESM per shard (one EXTRACT module, label 'gpu')
 *     -> MERGE per shard -> CLASSIFY per sample (its shards gathered, in order): the two
 *        prediction tables of the original and a per-sequence summary, published to outdir
 *     -> REPORT per sample: a self-contained report.html beside the tables
 *
 * Every process calls the bin/ tools; options, store paths and publishing are in conf/modules.config.
 * Models, embeddings and features go to `params.store_dir` (storeDir) under a key of everything
 * that determines their content, so a rerun, or a run with more input, recomputes only what is new.
 */

include { validateParameters; paramsSummaryLog; samplesheetToList } from 'plugin/nf-schema'

include { TRANSLATE                    } from './modules/translate'
include { MAKE_TEST_MODELS             } from './modules/make_test_models'
include { RESOLVE_MODEL                } from './modules/resolve_model'
include { FETCH_MODEL                  } from './modules/fetch_model'
include { CHECK                        } from './modules/check'
include { EXTRACT as EXTRACT_DNABERT   } from './modules/extract'
include { EXTRACT as EXTRACT_ESM       } from './modules/extract'
include { MERGE                        } from './modules/merge'
include { CLASSIFY                     } from './modules/classify'
include { REPORT                       } from './modules/report'

// The fields main.nf adds to a sample's meta for each of its shards; sampleMeta() takes them off,
// so the sample's own meta (whatever fields the samplesheet gives it) reaches CLASSIFY unchanged.
def shardFields() {
    return ['shard', 'shard_index', 'shard_count', 'md5', 'features_key']
}

// The tools' `<stem>` rule (SPEC 3): name without `.gz` and without a FASTA extension.
def fastaStem(String name) {
    def base = name.endsWith('.gz') ? withoutSuffix(name, '.gz') : name
    def ext = ['.fa', '.fasta', '.fna', '.ffn', '.faa', '.fas'].find { suffix -> base.endsWith(suffix) }
    return ext ? withoutSuffix(base, ext) : base
}

def withoutSuffix(String name, String suffix) {
    return name.substring(0, name.length() - suffix.length())
}

def md5Hex(String text) {
    return java.security.MessageDigest.getInstance('MD5').digest(text.getBytes('UTF-8')).encodeHex().toString()
}

// `md5sum` lines (`<hash>  <name>`) -> [name: hash]
def readChecksums(checksums) {
    return checksums.readLines().findAll { line -> line.trim() }.collectEntries { line ->
        def parts = line.trim().split(/\s+/, 2)
        [parts[1].replaceFirst(/^\*/, ''), parts[0]]
    }
}

// The number of a translate shard file: `<stem>.<n>.nucleotide.fa` -> n (any number of digits);
// a single unsharded pair (`<stem>.nucleotide.fa`) is shard 1.
def shardIndex(String name, int count) {
    def match = name =~ /\.(\d+)\.(nucleotide|protein)\.fa$/
    return (count == 1 || !match.find()) ? 1 : match.group(1).toInteger()
}

// One [meta, nucleotide, protein] per shard pair of a TRANSLATE task, paired and ordered by shard
// number (numerically, so order and names hold past 99,999 shards). The shard meta is the sample's
// meta plus shardFields(): a name unique in the run (`<sample id>.<number>`, zero-padded to the
// widest number, at least 5 digits), the number and count, and the md5 of each file (the store's
// content keys).
def shardItems(meta, nucleotides, proteins, checksums) {
    def md5 = readChecksums(checksums)
    def nucleotide_files = [nucleotides].flatten()
    def count = nucleotide_files.size()
    def protein_files = [proteins].flatten().collectEntries { f -> [shardIndex(f.name, count), f] }
    def numbered = nucleotide_files.collect { nucleotide -> [shardIndex(nucleotide.name, count), nucleotide] }
        .sort { entry -> entry[0] }
    def width = Math.max(5, numbered[-1][0].toString().length())
    return numbered.collect { entry ->
        def (index, nucleotide) = entry
        def protein = protein_files[index]
        def shard_meta = meta + [shard: "${meta.id}.${index.toString().padLeft(width, '0')}".toString(),
                                 shard_index: index, shard_count: count,
                                 md5: [dnabert: md5[nucleotide.name], esm: md5[protein.name]]]
        [shard_meta, nucleotide, protein]
    }
}

def sampleMeta(shard_meta) {
    return shard_meta.findAll { key, value -> !(key in shardFields()) }
}

// The features of one shard are keyed by the store folders of the two embeddings they are merged
// from (those folders hold every key of the embeddings), digested into one name.
def featuresKey(dnabert, esm) {
    return md5Hex("${dnabert.parent}\n${esm.parent}".toString())
}

// md5 of a local model folder: every file's relative name and bytes, in name order (hidden
// files such as a hub download's .cache/ left out). The bytes are read once: the digest is kept
// in `cacheDir` under a key of the folder's path and every file's name, size and modification
// time, so later runs only list the folder (any file changed, added or removed: read again).
def folderDigest(folder, cacheDir) {
    def files = []
    folder.eachFileRecurse(groovy.io.FileType.FILES) { f -> files << f }
    def named = files.collect { f -> [folder.relativize(f).toString(), f] }
        .findAll { entry -> !entry[0].split('/').any { part -> part.startsWith('.') } }
        .sort { entry -> entry[0] }
    def listing = named.collect { entry ->
        "${entry[0]}\t${java.nio.file.Files.size(entry[1])}\t${java.nio.file.Files.getLastModifiedTime(entry[1]).toMillis()}"
    }.join('\n')
    def cached = cacheDir.resolve(md5Hex("${folder.toAbsolutePath()}\n${listing}".toString()) + '.md5')
    if (java.nio.file.Files.isRegularFile(cached)) {
        return cached.text.trim()
    }
    def digest = java.security.MessageDigest.getInstance('MD5')
    named.each { entry ->
        digest.update("${entry[0]}\n".toString().getBytes('UTF-8'))
        entry[1].withInputStream { stream -> stream.eachByte(1 << 20) { buffer, n -> digest.update(buffer, 0, n) } }
    }
    def hex = digest.digest().encodeHex().toString()
    // Written under a temporary name and renamed, so a concurrent run never reads half a digest.
    java.nio.file.Files.createDirectories(cacheDir)
    def temporary = java.nio.file.Files.createTempFile(cacheDir, '.digest.', '.tmp')
    temporary.text = hex
    java.nio.file.Files.move(temporary, cached, java.nio.file.StandardCopyOption.REPLACE_EXISTING)
    return hex
}

def isObjectStorage(String path) {
    return path ==~ /[a-z][a-z0-9+.-]*:\/\/.*/
}

// Where folderDigest keeps its digests: the store (local or shared file system), else the launch
// folder's .nextflow/ (a store in object storage).
def digestCache() {
    def store = params.store_dir.toString()
    return isObjectStorage(store) ? file("${workflow.launchDir}/.nextflow/virnucpro-digests") : file("${store}/digests")
}

// The store's compile-cache folder for torch.compile (see modules/extract.nf), or [] (no such
// input) when the store is object storage: tasks there compile in their own scratch space.
def compileCache() {
    def store = params.store_dir.toString()
    if (isObjectStorage(store)) {
        return []
    }
    def folder = file("${store}/compile-cache")
    folder.mkdirs()
    return folder
}

// virnucpro-check runs before extraction in a test run (tiny models) that asks for a GPU.
def checkFirst() {
    return flag(params.make_test_models) && params.device.toString().startsWith('cuda')
}

def isLocalModel(String model) {
    return java.nio.file.Files.isDirectory(file(model))
}

def isCommit(String revision) {
    return revision ==~ /[0-9a-f]{40}/
}

// The store key of a hub model at a commit: `<id with / as -->@<commit>`.
def hubKey(String model, String commit) {
    return "${model.replace('/', '--')}@${commit}".toString()
}

// A boolean param, whether it came from a config file (true) or the command line ('true').
def flag(value) {
    return value.toString().toBoolean()
}

// [meta, fasta] per sample: rows of the --input samplesheet (validated by assets/schema_input.json),
// or one sample per file of --input_fasta (a path or glob; the sample id is the file's stem).
def samples() {
    if (params.input && params.input_fasta) {
        error "give either --input (a samplesheet) or --input_fasta (FASTA files), not both"
    }
    if (params.input) {
        return channel.fromList(samplesheetToList(params.input, "${projectDir}/assets/schema_input.json"))
    }
    if (params.input_fasta) {
        return channel.fromPath(params.input_fasta, checkIfExists: true).map { fasta -> [[id: fastaStem(fasta.name)], fasta] }
    }
    error "--input samplesheet.csv (columns sample,fasta) or --input_fasta 'contigs/*.fa' is required; see --help"
}

workflow {
    validateParameters()
    log.info paramsSummaryLog(workflow)
    if (!flag(params.make_test_models) && !params.classifier) {
        error "--classifier is required: ${params.chunk_size}_model.pth from the VirNucPro repository (a path or URL); see README, section 'The Nextflow pipeline'"
    }
    // The published classifiers say their chunk size in their names: a mismatch stops here, not after the embedding.
    def named = params.classifier ? (file(params.classifier).name =~ /^(\d+)_model\.pth$/) : null
    if (named && (named[0][1] as Integer) != (params.chunk_size as Integer)) {
        error "--classifier ${file(params.classifier).name} was trained on ${named[0][1]} bp chunks, but --chunk_size is ${params.chunk_size}: give --chunk_size ${named[0][1]} or the ${params.chunk_size}_model.pth classifier"
    }

    // Sample ids name the results folders and shards: they must be unique.
    def ch_samples = samples().toList().flatMap { items ->
        def ids = items.collect { item -> item[0].id }
        def repeated = ids.findAll { id -> ids.count(id) > 1 }.unique()
        if (repeated) {
            error "samples with the same id would overwrite each other's results: ${repeated.join(', ')}"
        }
        items
    }

    // Models: tiny test models, local folders as they are, or hub ids snapshotted into the store.
    def ch_versions = channel.empty()
    def ch_dnabert
    def ch_esm
    def classifier
    if (flag(params.make_test_models)) {
        MAKE_TEST_MODELS()
        ch_dnabert = MAKE_TEST_MODELS.out.dnabert.map { folder -> [[kind: 'dnabert', id: "test-${folderDigest(folder, digestCache())}".toString()], folder] }.first()
        ch_esm = MAKE_TEST_MODELS.out.esm.map { folder -> [[kind: 'esm', id: "test-${folderDigest(folder, digestCache())}".toString()], folder] }.first()
        classifier = params.classifier ? channel.value(file(params.classifier, checkIfExists: true)) : ((params.chunk_size as Integer) == 300 ? MAKE_TEST_MODELS.out.classifier_300 : MAKE_TEST_MODELS.out.classifier).first()
        ch_versions = ch_versions.mix(MAKE_TEST_MODELS.out.versions)
    } else {
        // A local folder is used as it is (key: its digest); a hub id is resolved to a commit
        // (unless its revision is one), then snapshotted once into the store under that commit.
        def requests = [[kind: 'dnabert', model: params.dnabert_model, revision: params.dnabert_revision],
                        [kind: 'esm', model: params.esm_model, revision: params.esm_revision]]
        def local = requests.findAll { request -> isLocalModel(request.model) }.collect { request ->
            [[kind: request.kind, id: "local-${folderDigest(file(request.model), digestCache())}".toString()], file(request.model)]
        }
        def hub = requests.findAll { request -> !isLocalModel(request.model) }
        RESOLVE_MODEL(channel.fromList(hub.findAll { request -> !isCommit(request.revision) }))
        def ch_hub = RESOLVE_MODEL.out.commit
            .mix(channel.fromList(hub.findAll { request -> isCommit(request.revision) }.collect { request -> [request, request.revision] }))
            .map { request, commit -> request + [commit: commit, id: hubKey(request.model, commit)] }
        FETCH_MODEL(ch_hub)
        def ch_models = FETCH_MODEL.out.model.mix(channel.fromList(local))
        ch_dnabert = ch_models.filter { model_meta, folder -> model_meta.kind == 'dnabert' }.first()
        ch_esm = ch_models.filter { model_meta, folder -> model_meta.kind == 'esm' }.first()
        classifier = channel.value(file(params.classifier, checkIfExists: true))
        ch_versions = ch_versions.mix(RESOLVE_MODEL.out.versions.first(), FETCH_MODEL.out.versions.first())
    }

    // Scatter: one item per shard pair, its meta carrying the shard's name, number and md5s.
    TRANSLATE(ch_samples)
    def ch_shards = TRANSLATE.out.shards.flatMap { meta, nucleotides, proteins, checksums ->
        shardItems(meta, nucleotides, proteins, checksums)
    }

    // A test run on a GPU checks the node first (virnucpro-check); extraction waits for it to pass.
    def compile_cache = compileCache()
    if (checkFirst()) {
        CHECK(ch_dnabert, ch_esm, compile_cache)
        ch_dnabert = CHECK.out.report.combine(ch_dnabert).map { report, model_meta, folder -> [model_meta, folder] }.first()
        ch_esm = CHECK.out.report.combine(ch_esm).map { report, model_meta, folder -> [model_meta, folder] }.first()
        ch_versions = ch_versions.mix(CHECK.out.versions)
    }

    EXTRACT_DNABERT(ch_shards.map { meta, nucleotide, protein -> [meta, nucleotide] }, ch_dnabert, compile_cache)
    EXTRACT_ESM(ch_shards.map { meta, nucleotide, protein -> [meta, protein] }, ch_esm, compile_cache)
    def ch_embeddings = EXTRACT_DNABERT.out.embeddings
        .join(EXTRACT_ESM.out.embeddings, failOnMismatch: true, failOnDuplicate: true)
        .map { meta, dnabert, esm -> [meta + [features_key: featuresKey(dnabert, esm)], dnabert, esm] }
    MERGE(ch_embeddings)

    // Gather: each sample's features in shard order, released as soon as its last shard is merged;
    // the sample's meta is the one TRANSLATE got, unchanged.
    def ch_features = MERGE.out.features
        .map { meta, features -> [groupKey(sampleMeta(meta), meta.shard_count), [meta.shard_index, features]] }
        .groupTuple()
        .map { key, shards -> [key.getGroupTarget(), shards.sort { shard -> shard[0] }.collect { shard -> shard[1] }] }
        .join(TRANSLATE.out.sequences, failOnMismatch: true, failOnDuplicate: true)
    CLASSIFY(ch_features, classifier)
    REPORT(CLASSIFY.out.predictions.join(CLASSIFY.out.summary, failOnMismatch: true, failOnDuplicate: true))

    ch_versions
        .mix(TRANSLATE.out.versions.first(), EXTRACT_DNABERT.out.versions.first(), EXTRACT_ESM.out.versions.first(),
             MERGE.out.versions.first(), CLASSIFY.out.versions.first(), REPORT.out.versions.first())
        .collectFile(name: 'software_versions.yml', storeDir: "${params.outdir}/pipeline_info", sort: true)
}
